"""HART training (class- or text-conditioned, on a hybrid tokenizer's ids and residuals): condition dropout,
MAR masking of the last scale, cross-entropy of every kept token, and the residual diffusion head's loss on the
kept last-scale tokens (HART's ``HARTForT2I.forward``). The model is called only through its forward and
public methods.

Text conditioning: each batch's captions go through the text encoder (``TextEncoder``), or come as the
contexts ``artok encode --text-encoder`` stored; a dropped caption (``class_dropout``) becomes HART's zero
context, or the encoded null prompt when the encoder's record names one. Grids have one row per prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.config import ConfigError
from artok.data import build_source
from artok.models.text_encoder import TextEncoder
from artok.pipeline import build_hart
from artok.sampling import check_text_encoder, filter_logits, generate
from artok.training.objectives.generator import GeneratorObjective
from artok.training.report import class_grid
from artok.training.token_data import caption_store


@dataclass
class TextCondition:
    """A batch's text condition: context (B, T, D), mask (B, T), position ids (B, T) and the dropout flags
    (None: ``hart_losses`` draws them, zeroing the dropped contexts as HART does)."""

    context: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    drop: torch.Tensor | None = None


def draw_ids(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """One id per row of logits (B, l, V) → (B, l): argmax when ``top_k == 1``, else one ``torch.multinomial``
    draw per row from the top-k/top-p filtered distribution (``artok.sampling.filter_logits``), on the
    generator's device."""
    B, l, V = logits.shape
    if top_k == 1:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, top_k=top_k, top_p=top_p).softmax(dim=-1).view(B * l, V)
    if generator is not None and generator.device != probs.device:  # torch samples on the generator's device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, replacement=True, generator=generator).view(B, l).to(logits.device)


def hart_losses(model: nn.Module, ids: list[torch.Tensor], inputs: torch.Tensor, condition: torch.Tensor, *,
                residual: torch.Tensor, codebook: torch.Tensor, context_mask: torch.Tensor | None = None,
                context_position_ids: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                drop: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """HART's training losses of a ``HartTransformer``.

    ids: per scale (B, pn²) and inputs = ``tok.teacher_inputs(ids)``; condition: labels (B,) or a context;
    residual (B, C, h, w): the tokenizer's continuous residual (``tok.tokenize_hybrid``); codebook (V, C): the
    code vectors (``tok.indices_to_codes(arange(V))``). The diffusion target of a kept token is its residual
    before the last code minus the code of an id the model itself samples there (top-k ``train_top_k``,
    top-p ``train_top_p``), so the head learns to correct the transformer's own choices. ``keep`` (B, n) and
    ``drop`` (B,) default to fresh draws (``drop`` only in training mode). Returns ``loss`` = ``ce`` +
    ``diffusion``, and ``accuracy``.
    """
    cfg = model.config
    B = inputs.shape[0]
    H = cfg.scales[-1]
    if residual.shape != (B, cfg.latent_channels, H, H):
        raise ValueError(f"residual must be (B, C, h, w) = ({B}, {cfg.latent_channels}, {H}, {H}), "
                         f"got {tuple(residual.shape)}")
    if codebook.shape != (cfg.codebook_size, cfg.latent_channels):
        raise ValueError(f"codebook must be (V, C) = ({cfg.codebook_size}, {cfg.latent_channels}), "
                         f"got {tuple(codebook.shape)}")
    if keep is None:
        keep = model.mask_last_scale(B, device=inputs.device, generator=generator)
    if drop is None and model.training and cfg.class_dropout > 0:
        drop = torch.rand(B, generator=generator).to(inputs.device) < cfg.class_dropout
    out = model(inputs, condition, context_mask=context_mask, context_position_ids=context_position_ids,
                keep=keep, drop=drop)
    last_ids = torch.gather(ids[-1], 1, keep)  # (B, n)
    targets = torch.cat([*ids[:-1], last_ids], dim=1)  # (B, 1 + … + n)
    ce = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
    accuracy = (out.logits.argmax(-1) == targets).float().mean()

    n = keep.shape[1]
    with torch.no_grad():
        sampled = draw_ids(out.logits[:, -n:].float(), top_k=cfg.train_top_k, top_p=cfg.train_top_p,
                           generator=generator).to(inputs.device)
    sampled_codes = codebook[sampled]  # (B, n, C)
    before_last = rearrange(residual, "b c h w -> b (h w) c") + codebook[ids[-1]]  # f_rest before the last code
    target = torch.gather(before_last, 1, keep[..., None].expand(-1, -1, cfg.latent_channels)) - sampled_codes
    z = model.diffusion_condition(out.hidden, sampled_codes)  # (B, n, D)
    mul = cfg.diffusion_batch_mul
    diffusion = model.diffusion_head.loss(target.detach().flatten(0, 1).repeat(mul, 1),
                                          z.flatten(0, 1).repeat(mul, 1))["loss"].mean()
    return {"loss": ce + diffusion, "ce": ce, "diffusion": diffusion, "accuracy": accuracy}


class HartLosses(nn.Module):
    """``hart_losses`` as a forward pass, so that Accelerate's DDP wrapper sees one forward for the whole
    computation (transformer and diffusion head) and synchronises every gradient. Its state dict is the
    transformer's under ``hart.``."""

    def __init__(self, hart: nn.Module) -> None:
        super().__init__()
        self.hart = hart

    def forward(self, ids, inputs, condition, residual, codebook, context_mask=None, context_position_ids=None,
                drop=None) -> dict[str, torch.Tensor]:
        return hart_losses(self.hart, ids, inputs, condition, residual=residual, codebook=codebook,
                           context_mask=context_mask, context_position_ids=context_position_ids, drop=drop)


class HartObjective(GeneratorObjective):
    """A class- or text-conditioned ``HartTransformer`` with its residual diffusion head."""

    hybrid = True

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        if not self.tok.is_hybrid:
            raise ConfigError(f"tokenizer: HART trains on a hybrid tokenizer's ids and residuals; {self.cfg.tokenizer} "
                              f"holds a {self.tok.config.quantizer.kind} tokenizer")
        if self.cfg.text_conditioned:
            self.setup_text(accelerator.device)

    # -- text conditioning ---------------------------------------------------------------------------------
    def setup_text(self, device) -> None:
        """The text encoder (unless every context is stored), the record to export, the null prompt's
        context, and the grid's prompts with their contexts."""
        cfg = self.cfg
        self.store = caption_store(cfg)
        stored = self.store is not None and self.store.has_contexts
        record = cfg.text_encoder if cfg.text_encoder is not None else self.store.record
        self.encoder = None
        if not stored or cfg.recipe.sample_prompts:
            self.encoder = TextEncoder(record, device=device)
            record = self.encoder.record()
        self.text_record = record
        self.null = None  # (context (T, D), mask (T,)) of the null prompt, or None: HART's zero context
        if record.null_prompt is not None:
            if self.encoder is not None:
                null = self.encoder.null_context(1)
                self.null = (null.context[0], null.mask[0])
            else:
                self.null = self.store.null_context()
        self.grid_prompts = list(cfg.recipe.sample_prompts) or self.first_captions(len(cfg.recipe.sample_classes))
        if self.encoder is not None:
            text = self.encoder(self.grid_prompts)
            self.grid_context = (text.context, text.mask)
        else:  # the stored contexts of the inputs with those captions
            first = {c: i for i, c in reversed(list(enumerate(self.store.captions))) if c is not None}
            pairs = [self.store.context(first[p]) for p in self.grid_prompts]
            self.grid_context = (torch.stack([c for c, _ in pairs]), torch.stack([m for _, m in pairs]))

    def first_captions(self, n: int, *, scan: int = 10000) -> list[str]:
        """The first ``n`` distinct captions of the data (of its first ``scan`` inputs)."""
        if self.store is not None:
            captions = self.store.captions[:scan]
        else:
            source = build_source(self.cfg.data.images, image_size=self.tok.image_size, seed=self.cfg.train.seed)
            captions = []
            for i in range(min(scan, len(source))):
                try:
                    captions.append(source.caption(i))
                except Exception:  # an input without a caption is skipped here as in training
                    continue
                if len(set(captions)) >= n:
                    break
        distinct = list(dict.fromkeys(c for c in captions if c))[:n]
        if not distinct:
            raise ConfigError("data: no captions found for the sample grids; set recipe.sample_prompts")
        return distinct

    def condition(self, batch: dict, labels: torch.Tensor):
        if not self.cfg.text_conditioned:
            return super().condition(batch, labels)
        if "context" in batch:
            context, mask = batch["context"].to(self.device), batch["context_mask"].to(self.device).bool()
        else:
            text = self.encoder(batch["captions"])
            context, mask = text.context, text.mask
        drop = None
        if self.null is not None and self.cfg.generator.class_dropout > 0:  # dropped captions → the null prompt
            drop = torch.rand(context.shape[0]).to(self.device) < self.cfg.generator.class_dropout
            null_context, null_mask = (t.to(self.device) for t in self.null)
            context = torch.where(drop[:, None, None], null_context.to(context.dtype), context)
            mask = torch.where(drop[:, None], null_mask, mask)
            drop = torch.zeros_like(drop)  # replaced here, not zeroed by the model
        return TextCondition(context, mask, mask.long().cumsum(1) - 1, drop)

    def grid(self, net: nn.Module, device) -> np.ndarray:
        if not self.cfg.text_conditioned:
            return super().grid(net, device)
        recipe, n = self.cfg.recipe, self.cfg.recipe.samples_per_class
        context, mask = (t.to(device).repeat_interleave(n, dim=0) for t in self.grid_context)
        null = None
        if self.null is not None:
            null = tuple(t.to(device)[None].expand(len(context), *t.shape) for t in self.null) + (None,)
        rng = torch.Generator(device=device).manual_seed(recipe.sample_seed)
        out = generate(net, self.tok, context, cfg_scale=recipe.sample_cfg, top_k=recipe.sample_top_k,
                       top_p=recipe.sample_top_p, generator=rng, context_mask=mask, null_condition=null)
        return class_grid(out.images.cpu(), rows=len(self.grid_prompts))

    # -- the model -------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_hart(self.cfg.generator)

    def build(self, accelerator) -> nn.Module:
        model = super().build(accelerator)
        if self.cfg.text_conditioned and self.encoder is not None:
            check_text_encoder(model, self.encoder)
        self.codebook = self.tok.indices_to_codes(torch.arange(self.tok.codebook_size, device=accelerator.device))
        return model

    def trainable(self, net: nn.Module) -> nn.Module:
        return HartLosses(net)

    def token_loss(self, model, ids, condition, residual):
        with torch.no_grad():
            inputs = self.tok.teacher_inputs(ids)
        if isinstance(condition, TextCondition):
            losses = model(ids, inputs, condition.context, residual, self.codebook, context_mask=condition.mask,
                           context_position_ids=condition.positions, drop=condition.drop)
        else:
            losses = model(ids, inputs, condition, residual, self.codebook)
        return losses["loss"], {k: v.detach().float() for k, v in losses.items()}
