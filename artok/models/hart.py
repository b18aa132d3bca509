"""HART's hybrid autoregressive transformer (Tang et al., 2024, arXiv 2410.10812; docs/reference-behaviour.md 5.2–5.4).

VAR's next-scale prediction on Llama blocks (RMSNorm with weights, SwiGLU, rotary positions), conditioned on
a sequence of condition tokens that start the sequence: text-encoder states (the released text-to-image
model) or one class embedding (the paper's class-conditional model). The last scale's hidden states also
condition a residual diffusion head (``DiffusionHead``) that generates the continuous residual of the
hybrid tokenizer.

Sequence: T condition tokens (level 0), then the teacher inputs of scales 1..K−1 (scale k at level k). The
logits of scale 0 come from the last condition token. Attention is block-causal over levels (the condition
tokens, padding included, see each other). Positions: 1D RoPE at the condition tokens' position ids; 2D RoPE
on image tokens at (row, col)·pn_last/pn_k, offset by the last condition position (docs/reference-behaviour.md Q7).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from artok.config import HartConfig
from artok.checkpoint import PretrainedMixin, register_model_type
from artok.models.attention import KVCache
from artok.models.blocks import HartBlock
from artok.models.diffusion_head import DiffusionHead
from artok.models.llama import RMSNorm, rope_angles_1d, rope_angles_2d


# ---------------------------------------------------------------------------------------------------------
# The transformer
# ---------------------------------------------------------------------------------------------------------


@dataclass
class HartCondition:
    """Embedded condition tokens: tokens (B, T, D), pooled (B, D) for the blocks, head_pooled (B, D) for the
    head, positions (B, T) 1D RoPE position ids; offset (B,) the 2D RoPE offset of the image tokens."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    head_pooled: torch.Tensor
    positions: torch.Tensor
    offset: torch.Tensor


@dataclass
class HartOutput:
    """Teacher forcing: logits (B, 1 + Σ_{0<k<K−1} pn_k² + n_last, V), from the last condition token on;
    hidden (B, n_last, D), the last block's output at the (kept) last-scale tokens."""

    logits: torch.Tensor
    hidden: torch.Tensor


@register_model_type
class HartTransformer(PretrainedMixin, nn.Module):
    """HART's transformer with its residual diffusion head (``diffusion_head``)."""

    model_type = "hart_transformer"
    config_class = HartConfig

    def __init__(self, config: HartConfig) -> None:
        super().__init__()
        self.config = config
        D = config.embed_dim
        self.word_embed = nn.Linear(config.latent_channels, D)
        if config.class_conditional:
            self.class_embed = nn.Embedding(config.num_classes + 1, D)  # the last row is the null class
        else:
            self.context_norm = RMSNorm(config.context_dim, config.norm_eps) if config.context_norm else None
            self.context_embed = nn.Linear(config.context_dim, D)
        self.level_embed = nn.Embedding(len(config.scales), D)
        self.blocks = nn.ModuleList([
            HartBlock(embed_dim=D, num_heads=config.num_heads, mlp_hidden=config.mlp_hidden, adaln=config.adaln,
                      l2_norm=config.attention_l2_norm, norm_eps=config.norm_eps)
            for _ in range(config.depth)
        ])
        self.head_norm = RMSNorm(D, config.norm_eps)
        self.head_adaln = nn.Linear(D, 2 * D)
        self.head = nn.Linear(D, config.codebook_size)
        self.decoder_norm = RMSNorm(D, config.norm_eps)
        self.diffusion_head = DiffusionHead(config.diffusion_head)
        self.init_weights()

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional model (0 for text-to-image)."""
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def describe(self) -> list[str]:
        """Lines for ``artok info``."""
        cfg, head = self.config, self.diffusion_head.config
        cond = (f"{cfg.num_classes} classes (+ null class {cfg.num_classes})" if cfg.class_conditional else
                f"text context of up to {cfg.max_context_tokens} tokens x {cfg.context_dim}"
                f"{', RMS-normalised' if cfg.context_norm else ''}")
        return [
            "type            HART transformer (next-scale + residual diffusion)",
            f"parameters      {sum(p.numel() for p in self.parameters()):,} (diffusion head "
            f"{sum(p.numel() for p in self.diffusion_head.parameters()):,})",
            f"transformer     depth {cfg.depth}, width {cfg.embed_dim}, {cfg.num_heads} heads, Llama blocks, "
            f"AdaLN {cfg.adaln}, {'l2-normalised' if cfg.attention_l2_norm else 'scaled dot-product'} attention",
            f"condition       {cond}",
            f"diffusion head  width {head.width}, depth {head.depth}, {head.num_sampling_steps} sampling steps",
            f"codebook        {cfg.codebook_size} codes, {cfg.latent_channels} latent channels",
            f"scales          {', '.join(map(str, cfg.scales))}",
        ]

    @torch.no_grad()
    def init_weights(self, *, std: float | None = None, init_adaln_gamma: float = 1e-5) -> None:
        """Truncated-normal weights with std √(1/(3D)) (VAR), residual projections scaled by 1/√(2·depth),
        AdaLN gates near zero; the diffusion head keeps MAR's init (``DiffusionHead.init_weights``)."""
        D, depth = self.config.embed_dim, self.config.depth
        std = std if std is not None else math.sqrt(1 / D / 3)
        for name, m in self.named_modules():
            if name.startswith("diffusion_head"):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
        self.head.weight.mul_(0.02)
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.down_proj.weight.div_(math.sqrt(2 * depth))
            if block.mode == "pooled":
                block.adaln.weight[: 2 * D].mul_(init_adaln_gamma)
            elif block.mode == "shared_table":
                block.adaln_table[:2].mul_(init_adaln_gamma)
        self.diffusion_head.init_weights()

    # -- condition ----------------------------------------------------------------------------------------
    def embed_condition(self, condition: torch.Tensor, *, context_mask: torch.Tensor | None = None,
                        context_position_ids: torch.Tensor | None = None,
                        drop: torch.Tensor | None = None) -> HartCondition:
        """Class labels (B,) or context (B, T, context_dim) with a (B, T) bool mask (True = valid, right
        padded; default all valid) and position ids (default cumsum(mask) − 1, as HART's encode_prompts).
        ``drop`` (B,) bool replaces the condition by the null one: zero context (mask and positions kept,
        as HART's training does) or the null class."""
        cfg = self.config
        if cfg.class_conditional:
            labels = self.check_labels(condition)
            if drop is not None:
                labels = torch.where(drop.to(labels.device), torch.full_like(labels, self.null_class), labels)
            tokens = self.class_embed(labels)[:, None]  # (B, 1, D)
            B = tokens.shape[0]
            positions = torch.zeros(B, 1, dtype=torch.long, device=tokens.device)
            pooled = tokens[:, 0]
            return HartCondition(tokens, pooled, pooled, positions, positions[:, 0].float())
        context, mask, positions = self.check_context(condition, context_mask, context_position_ids)
        if drop is not None:
            context = context * (~drop.to(context.device)).to(context.dtype)[:, None, None]
        if self.context_norm is not None:
            context = self.context_norm(context)
        tokens = self.context_embed(context)  # (B, T, D)
        head_pooled = tokens.max(dim=1).values  # padding included (docs/reference-behaviour.md Q8)
        if cfg.adaln == "shared_table" or cfg.adaln_pooling == "mean":
            w = mask.to(tokens.dtype)[..., None]
            pooled = (tokens * w).sum(1) / w.sum(1).clamp_min(1)
        else:
            pooled = head_pooled
        return HartCondition(tokens, pooled, head_pooled, positions, positions[:, -1].float())

    def null_condition(self, batch: int, *, context_tokens: int = 1, device=None) -> tuple:
        """The unconditional (condition, mask, position ids) for guidance: the null class, or a zero context
        with position ids 0 and only the first slot valid (HART's null branch)."""
        device = device if device is not None else self.head.weight.device
        if self.config.class_conditional:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=device), None, None
        T = context_tokens
        mask = torch.zeros(batch, T, dtype=torch.bool, device=device)
        mask[:, 0] = True
        return (torch.zeros(batch, T, self.config.context_dim, device=device, dtype=self.head.weight.dtype), mask,
                torch.zeros(batch, T, dtype=torch.long, device=device))

    def check_labels(self, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=self.head.weight.device)
        if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor of class ids, got shape {tuple(labels.shape)} "
                             f"dtype {labels.dtype}")
        if labels.numel() and not labels.is_meta and (int(labels.min()) < 0 or int(labels.max()) > self.null_class):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise ValueError(f"class id {bad} is out of range: this model has {self.config.num_classes} classes "
                             f"(0..{self.config.num_classes - 1}, and {self.null_class} for the null class)")
        return labels.long()

    def check_context(self, context: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None):
        """Validate a context batch; returns (context, mask, position ids) with the defaults filled in."""
        cfg = self.config
        if not isinstance(context, torch.Tensor) or context.ndim != 3 or context.shape[-1] != cfg.context_dim:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"context must be (B, T, {cfg.context_dim}) text-encoder states, got {shape}")
        B, T = context.shape[:2]
        if T > cfg.max_context_tokens:
            raise ValueError(f"context has {T} tokens, more than this model's maximum of {cfg.max_context_tokens}")
        if T < 1:
            raise ValueError("context needs at least one token")
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=context.device)
        if tuple(mask.shape) != (B, T):
            raise ValueError(f"context_mask must be (B, T) = ({B}, {T}), got {tuple(mask.shape)}")
        mask = mask.to(context.device).bool()
        if positions is None:
            positions = mask.long().cumsum(1) - 1
        if tuple(positions.shape) != (B, T):
            raise ValueError(f"context_position_ids must be (B, T) = ({B}, {T}), got {tuple(positions.shape)}")
        return context, mask, positions.to(context.device)

    # -- sequence pieces ----------------------------------------------------------------------------------
    def scale_angles(self, si: int, offset: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """2D RoPE angles of scale si's tokens (B, n, hd), at raster indices ``keep`` (B, n) or all."""
        pn, last = self.config.scales[si], self.config.scales[-1]
        B = offset.shape[0]
        idx = torch.arange(pn * pn, device=offset.device).expand(B, -1) if keep is None else keep
        step = last / pn
        rows = (idx // pn).float() * step + offset[:, None]
        cols = (idx % pn).float() * step + offset[:, None]
        return rope_angles_2d(rows, cols, self.config.head_dim)

    def _head(self, h: torch.Tensor, cond: HartCondition) -> torch.Tensor:
        scale, shift = self.head_adaln(F.silu(cond.head_pooled)).view(-1, 1, 2, h.shape[-1]).unbind(2)
        return self.head(self.head_norm(h).mul(1 + scale).add(shift)).float()

    def diffusion_condition(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """z = decoder_norm(h + word_embed(e[ids])) of last-scale tokens: hidden (B, n, D) and their codes
        (B, n, C) → (B, n, D)."""
        return self.decoder_norm(hidden + self.word_embed(codes))

    # -- teacher forcing ----------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, condition: torch.Tensor, *, context_mask: torch.Tensor | None = None,
                context_position_ids: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> HartOutput:
        """inputs: (B, L − 1, C) = ``tok.teacher_inputs(ids)``; condition: labels (B,) or context (B, T, Dc)
        with ``context_mask``/``context_position_ids``; keep: (B, n) ascending raster indices of the
        last-scale tokens to keep (MAR masking; None keeps all); drop: (B,) bool, the condition dropout.
        Returns logits (B, 1 + Σ_{0<k<K−1} pn_k² + n, V) and the hidden states of the kept last-scale tokens."""
        cfg = self.config
        scales, K = cfg.scales, len(cfg.scales)
        L1 = cfg.num_tokens - 1
        if inputs.ndim != 3 or inputs.shape[1:] != (L1, cfg.latent_channels):
            raise ValueError(f"inputs must be (B, L − 1, C) = (B, {L1}, {cfg.latent_channels}) teacher inputs, "
                             f"got {tuple(inputs.shape)}")
        cond = self.embed_condition(condition, context_mask=context_mask, context_position_ids=context_position_ids,
                                    drop=drop)
        B, T = cond.tokens.shape[:2]
        if inputs.shape[0] != B:
            raise ValueError(f"inputs have batch {inputs.shape[0]} but the condition has batch {B}")
        last = scales[-1] ** 2
        if keep is not None:
            if keep.ndim != 2 or keep.shape[0] != B or keep.shape[1] < 1 or int(keep.min()) < 0 or int(keep.max()) >= last:
                raise ValueError(f"keep must be (B, n) raster indices in [0, {last}) of the last scale, got "
                                 f"{tuple(keep.shape)}")
            keep = keep.to(inputs.device)
            head_inputs = inputs[:, : L1 - last]
            last_inputs = torch.gather(inputs[:, L1 - last:], 1, keep[..., None].expand(-1, -1, inputs.shape[-1]))
            inputs = torch.cat([head_inputs, last_inputs], dim=1)
        n_last = last if keep is None else keep.shape[1]

        levels = torch.cat([torch.zeros(T, dtype=torch.long)] +
                           [torch.full((scales[k] ** 2 if k < K - 1 else n_last,), k, dtype=torch.long)
                            for k in range(1, K)]).to(inputs.device)
        x = torch.cat([cond.tokens, self.word_embed(inputs.to(cond.tokens.dtype))], dim=1)  # (B, S, D)
        x = x + self.level_embed(levels)[None]
        angles = torch.cat([rope_angles_1d(cond.positions, cfg.head_dim)] +
                           [self.scale_angles(k, cond.offset, keep if k == K - 1 else None) for k in range(1, K)], dim=1)
        attn_mask = levels[:, None] >= levels[None, :]  # block-causal over levels
        for block in self.blocks:
            x = block(x, cond.pooled, angles, attn_mask=attn_mask)
        logits = self._head(x[:, T - 1:], cond)
        return HartOutput(logits=logits, hidden=x[:, -n_last:])

    # -- KV-cached generation -----------------------------------------------------------------------------
    def new_cache(self) -> KVCache:
        """An empty KV cache for ``start`` and ``step``."""
        return KVCache(self.config.depth)

    def start(self, cond: HartCondition, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the condition tokens (level 0) into a fresh cache (``new_cache()``); returns (logits of scale 0
        (B, 1, V), hidden (B, 1, D)) from the last condition token."""
        if not isinstance(cache, KVCache) or len(cache.layers) != len(self.blocks):
            raise TypeError(f"cache must be this model's new_cache() (a KVCache of {len(self.blocks)} layers), "
                            f"got {type(cache).__name__}")
        cfg = self.config
        x = cond.tokens + self.level_embed.weight[0]
        angles = rope_angles_1d(cond.positions, cfg.head_dim)
        for block, layer in zip(self.blocks, cache.layers):
            x = block(x, cond.pooled, angles, attn_mask=None, cache=layer)
        x = x[:, -1:]
        return self._head(x, cond), x

    def step(self, si: int, inputs: torch.Tensor, cond: HartCondition, cache: KVCache
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed scale si's inputs (B, pn², C) through the cache; returns (logits (B, pn², V), hidden (B, pn², D))."""
        x = self.word_embed(inputs.to(cond.tokens.dtype)) + self.level_embed.weight[si]
        angles = self.scale_angles(si, cond.offset)
        for block, layer in zip(self.blocks, cache.layers):
            x = block(x, cond.pooled, angles, attn_mask=None, cache=layer)
        return self._head(x, cond), x

    # -- training -----------------------------------------------------------------------------------------
    def mask_last_scale(self, batch: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """MAR masking of the last scale (docs/reference-behaviour.md 5.3): one rate ~ truncnorm on [mask_ratio_min, 1] (mean 1,
        std 0.25) per batch, n = min(⌈pn²·rate⌉, pn² − min_kept_tokens) tokens removed per sample in a random
        order. Returns the kept raster indices (B, pn² − n), ascending."""
        cfg = self.config
        last = cfg.scales[-1] ** 2
        rate = torch.empty(1)
        nn.init.trunc_normal_(rate, mean=1.0, std=0.25, a=cfg.mask_ratio_min, b=1.0, generator=generator)
        n_masked = max(0, min(math.ceil(last * float(rate)), last - cfg.min_kept_tokens))
        order = torch.rand(batch, last, generator=generator).argsort(dim=1)
        return order[:, n_masked:].sort(dim=1).values.to(device)
