"""Tokenizer training (single-scale VQ, multi-scale VAR, hybrid HART tokenizers): reconstruction,
perceptual, commitment, entropy and adversarial losses, the discriminator updated in the same micro-step,
codebook statistics in the log, reconstruction grids, the EMA tokenizer exported to ``out_dir/tokenizer``
and evaluated on held-out images at the end."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from artok.config import BUILTIN_SOURCES, ConfigError, TokenizerTrainConfig
from artok.data import build_dataset, evaluation_loader, training_loader
from artok.losses import PatchDiscriminator, TokenizerLoss
from artok.metrics import evaluate_tokenizer, reconstruct
from artok.pipeline import build_tokenizer
from artok.training import fsdp
from artok.training.checkpoint import export
from artok.training.optim import build_optimizer, parameter_groups
from artok.training.report import reconstruction_grid
from artok.training.run import Objective, micro_step

GRID_IMAGES = 16
EVAL_SPLIT = dict.fromkeys(BUILTIN_SOURCES, "test")  # held-out where one exists: every built-in set has one


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Temporarily stop gradients into ``module`` (the discriminator during the generator update), so the
    generator's backward leaves no stale gradients in it."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class GanLosses:
    """The tokenizer's part of a micro-step (``micro_step`` runs it): its losses with the discriminator
    frozen, then, once the adversarial loss is on (``loss.gan_start_step``), the discriminator's own update.
    Both optimizers are prepared by Accelerate, so accumulation, mixed precision and DDP work alike for both."""

    def __init__(self, accelerator, loss_fn: TokenizerLoss, discriminator=None, optimizer=None, scheduler=None, *,
                 grad_clip: float | None = None) -> None:
        self.accelerator, self.loss_fn, self.grad_clip = accelerator, loss_fn, grad_clip
        self.discriminator, self.optimizer, self.scheduler = discriminator, optimizer, scheduler
        self.extra_models = (discriminator,) if discriminator is not None else ()
        self.pending = None  # (images, reconstructions) the discriminator sees after the tokenizer's update

    def loss(self, model, batch: dict, *, step: int):
        acc = self.accelerator
        images = batch["images"].to(acc.device)
        critic = acc.unwrap_model(self.discriminator) if self.discriminator is not None else None
        use_gan = critic is not None and self.loss_fn.gan_active(step)
        output = model(images)
        with frozen(critic):
            loss, logs = self.loss_fn.generator_loss(output, images, step=step, tokenizer=acc.unwrap_model(model),
                                                     discriminator=critic if use_gan else None)
        self.pending = (images, output.reconstruction) if use_gan else None
        return loss, logs

    def after_update(self, *, step: int) -> dict:
        if self.pending is None:
            return {}
        (images, reconstruction), self.pending = self.pending, None
        acc = self.accelerator
        d_loss, d_logs = self.loss_fn.discriminator_loss(self.discriminator, images, reconstruction)
        acc.backward(d_loss)
        if acc.sync_gradients and self.grad_clip is not None:
            acc.clip_grad_norm_(self.discriminator.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return d_logs


def gan_step(accelerator, model, discriminator, optimizer, discriminator_optimizer, scheduler,
             discriminator_scheduler, loss_fn, images: torch.Tensor, *, step: int,
             grad_clip: float | None) -> dict[str, torch.Tensor]:
    """One micro-step of tokenizer training outside a run (tests, benchmarks); returns the logged scalars.
    images: (B, 3, H, W) in [-1, 1]; ``step``: optimizer steps done so far."""
    gan = GanLosses(accelerator, loss_fn, discriminator, discriminator_optimizer, discriminator_scheduler,
                    grad_clip=grad_clip)
    return micro_step(accelerator, gan, model, optimizer, scheduler, {"images": images}, step=step,
                      grad_clip=grad_clip)


def codebook_logs(tokenizer) -> dict[str, float]:
    codebook = tokenizer.quantizer.codebook
    usage, perplexity = codebook.usage_fraction().tolist(), codebook.perplexity().tolist()
    logs = {"restarted_codes": float(codebook.restarted_last_update)}
    for pn, u, p in zip(tokenizer.scales, usage, perplexity):
        logs[f"usage/{pn}x{pn}"], logs[f"perplexity/{pn}x{pn}"] = u, p
    return logs


class TokenizerObjective(Objective):
    """A ``TokenizerTrainConfig`` run: the tokenizer (and a PatchDiscriminator when ``loss.gan_weight > 0``)."""

    project = "artok-tokenizer"
    export_name = "tokenizer"  # out_dir/tokenizer: the EMA weights, loadable with artok.from_pretrained
    grid_name = "reconstructions"
    postfix = {"loss": ("loss", ".3f"), "psnr": ("psnr", ".1f")}

    def __init__(self, cfg: TokenizerTrainConfig) -> None:
        super().__init__(cfg)
        self.bad_files: set[str] = set()  # files skipped so far, over every process
        self.new_bad: list[str] = []  # this process's, since the last logging step

    def build(self, accelerator) -> nn.Module:
        self.tokenizer = build_tokenizer(self.cfg.tokenizer)
        self.loss_fn = TokenizerLoss(self.cfg.loss).to(accelerator.device)
        return self.tokenizer

    def parameter_groups(self, net: nn.Module) -> list[dict]:
        return parameter_groups(net, self.cfg.train.weight_decay)

    def prepare_extras(self, accelerator, schedule) -> None:
        t, loss = self.cfg.train, self.cfg.loss
        prepared = (None, None, None)
        if loss.gan_weight > 0 and loss.adaptive_gan_weight and accelerator.distributed_type.name == "FSDP":
            raise ConfigError("loss.adaptive_gan_weight: the adaptive weight differentiates the losses by the "
                              "decoder's last weight, which FSDP shards (its forward uses a gathered copy); set "
                              "loss.adaptive_gan_weight: false with FSDP")
        if loss.gan_weight > 0:  # GAN tokenizers: a second model and optimizer, updated in the same micro-step
            discriminator = PatchDiscriminator(channels=loss.discriminator_channels, num_layers=loss.discriminator_layers,
                                               norm=loss.discriminator_norm)
            optimizer = build_optimizer(discriminator, lr=t.discriminator_lr or t.lr, betas=t.betas)
            fsdp.set_wrap_units(accelerator, discriminator)  # FSDP: the discriminator's own units (none: one root)
            prepared = accelerator.prepare(discriminator, optimizer, schedule(optimizer))
        self.gan = GanLosses(accelerator, self.loss_fn, *prepared, grad_clip=t.grad_clip)
        self.extra_models = self.gan.extra_models

    def describe(self, net: nn.Module) -> str:
        return f"{self.cfg.tokenizer.quantizer.kind} tokenizer"

    def loader(self, accelerator, *, start: int):
        cfg, t = self.cfg, self.cfg.train
        # a preload decodes with every core this process may use (the processes of a node preload at once)
        workers = max(1, (os.cpu_count() or 1) // accelerator.num_processes)
        dataset = build_dataset(cfg.data, image_size=cfg.tokenizer.image_size, seed=t.seed, uint8=True,
                                preload_workers=workers, progress=accelerator.is_main_process)
        loader = training_loader(dataset, batch_size=t.batch_size, num_workers=cfg.data.num_workers,
                                 num_replicas=accelerator.num_processes, rank=accelerator.process_index, seed=t.seed,
                                 start=start)
        self.eval_set = build_dataset(cfg.data, image_size=cfg.tokenizer.image_size, train=False, seed=t.seed,
                                      split=EVAL_SPLIT.get(cfg.data.source, cfg.data.split))
        self.grid_images = next(iter(evaluation_loader(self.eval_set, batch_size=GRID_IMAGES,
                                                       num_images=GRID_IMAGES)))["images"]
        return loader, len(dataset)

    def loss(self, model, batch: dict, *, step: int):
        self.new_bad += batch["bad_files"]
        return self.gan.loss(model, batch, step=step)

    def after_update(self, *, step: int) -> dict:
        return self.gan.after_update(step=step)

    def batch_size(self, batch: dict) -> int:
        return batch["images"].shape[0]

    def record(self, accelerator) -> dict:
        from accelerate.utils import gather_object

        seen = [f for files in gather_object([self.new_bad]) for f in files]
        self.bad_files.update(seen)
        self.new_bad = []
        if accelerator.is_main_process and seen:
            (Path(self.cfg.train.out_dir) / "bad_files.txt").write_text("".join(f + "\n" for f in sorted(self.bad_files)))
        return {**codebook_logs(self.tokenizer), "bad_files": len(self.bad_files)}

    def grid(self, net: nn.Module, device) -> np.ndarray:
        _, rec = reconstruct(net, self.grid_images.to(device))
        return reconstruction_grid(self.grid_images, rec.cpu())

    def export(self, net: nn.Module, directory: Path) -> None:
        export(net, directory)

    def finish(self, net: nn.Module, accelerator) -> dict:
        """The exported weights evaluated on held-out images (``eval.json``)."""
        t = self.cfg.train
        if t.eval_images <= 0:
            return {}
        batches = evaluation_loader(self.eval_set, batch_size=min(64, t.eval_images), num_images=t.eval_images)
        result = evaluate_tokenizer(net, batches, metrics=("psnr", "ssim", "usage", "prefix"),
                                    device=accelerator.device, progress=False)
        (Path(t.out_dir) / "eval.json").write_text(json.dumps(result, indent=2))
        return result
