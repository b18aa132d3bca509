"""What VAR and HART training share: the frozen tokenizer whose ids the generator models, the token data,
progressive scales, VAR's learning-rate scaling and weight-decay rule, class-per-row sample grids, and the
export of the tokenizer with the EMA generator as a pipeline (``out_dir/pipeline``, for ``artok sample``).
A subclass builds its model, says what conditions a batch (``condition``: class labels here) and computes the
loss of a batch of ids (``token_loss``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from artok.config import ConfigError, GeneratorTrainConfig
from artok.pipeline import Pipeline, from_pretrained
from artok.sampling import check_compatible, generate
from artok.tokenizers import Tokenizer
from artok.training.optim import weight_matrix_groups
from artok.training.report import class_grid
from artok.training.run import Objective
from artok.training.token_data import batch_ids, map_labels, token_loader


def load_tokenizer(path: str, device) -> nn.Module:
    """The frozen tokenizer of a tokenizer or pipeline directory, in eval mode on ``device``."""
    model = from_pretrained(path)
    tok = model.tokenizer if isinstance(model, Pipeline) else model
    if not isinstance(tok, Tokenizer):
        raise ConfigError(f"tokenizer: {path} holds a {type(tok).__name__}, not a tokenizer")
    return tok.to(device).eval().requires_grad_(False)


def active_scales(step: int, *, num_scales: int, start: int, steps: int) -> int:
    """Progressive training: scales trained at ``step``, from ``start`` up to all at ``steps`` (VAR's pg)."""
    if start <= 0 or steps <= 0:
        return num_scales
    return min(num_scales, start + int((num_scales - start + 1) * step / steps))


def sample_grid(generator_model: nn.Module, tok, recipe, device) -> np.ndarray:
    """One row per class of ``recipe.sample_classes``, same seed every time, so grids compare across steps."""
    labels = torch.tensor([c for c in recipe.sample_classes for _ in range(recipe.samples_per_class)], device=device)
    rng = torch.Generator(device=device).manual_seed(recipe.sample_seed)
    out = generate(generator_model, tok, labels, cfg_scale=recipe.sample_cfg, top_k=recipe.sample_top_k,
                   top_p=recipe.sample_top_p, generator=rng)
    return class_grid(out.images.cpu(), rows=len(recipe.sample_classes))


class GeneratorObjective(Objective):
    """A ``GeneratorTrainConfig`` run; subclasses give ``build_model`` and ``token_loss``."""

    project = "artok-generator"
    export_name = "pipeline"  # out_dir/pipeline: tokenizer/ + generator/ (EMA weights), for artok sample
    grid_name = "samples"
    postfix = {"loss": ("loss", ".3f"), "acc": ("accuracy", ".3f")}
    hybrid = False  # whether batches carry (or tokenization yields) the hybrid tokenizer's continuous residual

    def __init__(self, cfg: GeneratorTrainConfig) -> None:
        super().__init__(cfg)
        self.num_scales = 0
        self.text_record = None  # a text-conditioned generator's TextEncoderConfig, exported with the pipeline

    def setup(self, accelerator) -> None:
        self.device = accelerator.device
        self.tok = load_tokenizer(self.cfg.tokenizer, accelerator.device)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def token_loss(self, model: nn.Module, ids: list[torch.Tensor], labels,
                   residual: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of ids per scale (B, pn²), the condition (``condition``'s: labels (B,)) and (hybrid)
        residuals (B, C, h, w)."""
        raise NotImplementedError

    def condition(self, batch: dict, labels: torch.Tensor):
        """What conditions a batch: its class labels, unlabelled records mapped to the null class."""
        return map_labels(labels, self.model.num_classes)

    def build(self, accelerator) -> nn.Module:
        self.model = self.build_model()
        check_compatible(self.model, self.tok)
        return self.model

    def learning_rate(self, global_batch: int) -> float:
        lr = self.cfg.train.lr
        return lr * global_batch / 256 if self.cfg.recipe.scale_lr else lr

    def parameter_groups(self, net: nn.Module) -> list[dict]:
        return weight_matrix_groups(net, self.cfg.train.weight_decay)  # no decay on embeddings, norms, biases

    def describe(self, net: nn.Module) -> str:
        return f"generator ({sum(p.numel() for p in net.parameters()):,} parameters)"

    def loader(self, accelerator, *, start: int):
        return token_loader(self.cfg, self.tok, accelerator, start=start)

    def loss(self, model: nn.Module, batch: dict, *, step: int):
        ids, labels, residual = batch_ids(batch, self.tok, self.device, hybrid=self.hybrid)
        condition = self.condition(batch, labels)
        recipe = self.cfg.recipe
        self.num_scales = active_scales(step, num_scales=len(self.tok.scales), start=recipe.progressive_start,
                                        steps=recipe.progressive_steps)
        return self.token_loss(model, ids, condition, residual)

    def batch_size(self, batch: dict) -> int:
        return batch["labels"].shape[0]

    def record(self, accelerator) -> dict:
        return {"active_scales": self.num_scales}

    def grid(self, net: nn.Module, device) -> np.ndarray:
        return sample_grid(net, self.tok, self.cfg.recipe, device)

    def export(self, net: nn.Module, directory: Path) -> None:
        r = self.cfg.recipe
        sampling = {"cfg": r.sample_cfg, "top_k": r.sample_top_k, "top_p": r.sample_top_p} \
            if r.export_sampling else None
        Pipeline(self.tok, net, self.text_record, sampling=sampling).save_pretrained(directory)
