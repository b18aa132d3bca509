"""HART training (class-conditional, on a hybrid tokenizer's ids and residuals): condition dropout, MAR
masking of the last scale, cross-entropy of every kept token, and the residual diffusion head's loss on the
kept last-scale tokens (HART's ``HARTForT2I.forward``). The model is called only through its forward and
public methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.config import ConfigError
from artok.pipeline import build_hart
from artok.sampling import filter_logits
from artok.training.objectives.generator import GeneratorObjective


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

    def forward(self, ids, inputs, labels, residual, codebook) -> dict[str, torch.Tensor]:
        return hart_losses(self.hart, ids, inputs, labels, residual=residual, codebook=codebook)


class HartObjective(GeneratorObjective):
    """A class-conditional ``HartTransformer`` with its residual diffusion head."""

    hybrid = True

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        if not self.tok.is_hybrid:
            raise ConfigError(f"tokenizer: HART trains on a hybrid tokenizer's ids and residuals; {self.cfg.tokenizer} "
                              f"holds a {self.tok.config.quantizer.kind} tokenizer")

    def build_model(self) -> nn.Module:
        return build_hart(self.cfg.generator)

    def build(self, accelerator) -> nn.Module:
        model = super().build(accelerator)
        self.codebook = self.tok.indices_to_codes(torch.arange(self.tok.codebook_size, device=accelerator.device))
        return model

    def trainable(self, net: nn.Module) -> nn.Module:
        return HartLosses(net)

    def token_loss(self, model, ids, labels, residual):
        with torch.no_grad():
            inputs = self.tok.teacher_inputs(ids)
        losses = model(ids, inputs, labels, residual, self.codebook)
        return losses["loss"], {k: v.detach().float() for k, v in losses.items()}
