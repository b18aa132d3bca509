"""HART's hybrid autoregressive transformer (Tang et al., 2024, arXiv 2410.10812; fixture README 5.2–5.4).

VAR's next-scale prediction on Llama blocks (RMSNorm with weights, SwiGLU, rotary positions), conditioned on
a sequence of condition tokens that start the sequence: text-encoder states (the released text-to-image
model) or one class embedding (the paper's class-conditional model). The last scale's hidden states also
condition a residual diffusion head (``DiffusionHead``) that generates the continuous residual of the
hybrid tokenizer.

Sequence: T condition tokens (level 0), then the teacher inputs of scales 1..K−1 (scale k at level k). The
logits of scale 0 come from the last condition token. Attention is block-causal over levels (the condition
tokens, padding included, see each other). Positions: 1D RoPE at the condition tokens' position ids; 2D RoPE
on image tokens at (row, col)·pn_last/pn_k, offset by the last condition position (quirk Q7).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from artok.config import HartConfig
from artok.hub import PretrainedMixin, register_model_type
from artok.models.diffusion_head import DiffusionHead

ROPE_BASE = 10000.0
MAX_LOG_ATTENTION_SCALE = math.log(100.0)
INITIAL_ATTENTION_SCALE = 4.0

# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x·rsqrt(mean(x²) + eps)·w, accumulated in fp32 (HART's fused kernel)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope_angles_1d(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Llama's 1D RoPE angles [p·inv, p·inv], inv = 10000^(−(0, 2, …)/hd): positions (B, n) → (B, n, hd)."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    f = positions.float()[..., None] * inv
    return torch.cat((f, f), dim=-1)


def rope_angles_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int) -> torch.Tensor:
    """HART's 2D RoPE angles [fx, fx, fy, fy], f = p·10000^(−(0, 4, …)/hd): (B, n) float positions →
    (B, n, hd). Dimension d pairs with d + hd/2 under *different* angles (x versus y), as HART does."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 4, device=rows.device, dtype=torch.float32) / head_dim)
    fx, fy = rows.float()[..., None] * inv, cols.float()[..., None] * inv
    return torch.cat((fx, fx, fy, fy), dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x: (B, N, n, hd); angles: (B, n, hd)."""
    cos, sin = angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """HART's ``LlamaAttention``: qkv with q/v biases, optional cosine attention, RoPE, KV cache."""

    def __init__(self, *, embed_dim: int, num_heads: int, l2_norm: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.l2_norm = num_heads, embed_dim // num_heads, l2_norm
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim), persistent=False)
        if l2_norm:
            self.log_scale = nn.Parameter(torch.full((1, num_heads, 1, 1), INITIAL_ATTENTION_SCALE).log())
        self.scale = 1.0 if l2_norm else 0.25 / math.sqrt(self.head_dim)  # quirk Q5
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, *, attn_mask: torch.Tensor | None,
                cache: dict | None = None) -> torch.Tensor:
        """x: (B, n, D); angles: (B, n, hd); attn_mask: (n, n) bool (True = may attend) or None. With
        ``cache`` (a dict this layer fills), the new tokens also attend to every cached token."""
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)))
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads).unbind(0)
        if self.l2_norm:  # before RoPE, as HART does
            q = F.normalize(q, dim=-1).mul(self.log_scale.clamp_max(MAX_LOG_ATTENTION_SCALE).exp())
            k = F.normalize(k, dim=-1)
        q, k = apply_rope(q, angles), apply_rope(k, angles)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
                attn_mask = None  # one new block: it sees everything cached and itself
            cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, n, D)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)), no biases."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.up_proj = nn.Linear(embed_dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class HartBlock(nn.Module):
    """Pre-norm Llama block with HART's AdaLN variants (one RMSNorm weight shared by both norms, Q8):
    x += Attn(norm(x)·(1+s1) + b1)·γ1; x += FFN(norm(x)·(1+s2) + b2)·γ2, or no modulation (``none``)."""

    def __init__(self, config: HartConfig) -> None:
        super().__init__()
        D = config.embed_dim
        self.mode = config.adaln
        self.norm = RMSNorm(D, config.norm_eps)
        self.attn = Attention(embed_dim=D, num_heads=config.num_heads, l2_norm=config.attention_l2_norm)
        self.ffn = SwiGLU(D, config.mlp_hidden)
        if self.mode == "pooled":
            self.adaln = nn.Linear(D, 6 * D)
        elif self.mode == "shared_table":
            self.adaln_table = nn.Parameter(torch.randn(6, D) / D ** 0.5)

    def modulation(self, pooled: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """(γ1, γ2, s1, s2, b1, b2), each (B, 1, D), from the pooled condition (B, D)."""
        if self.mode == "pooled":
            return self.adaln(F.silu(pooled)).view(-1, 1, 6, pooled.shape[-1]).unbind(2)
        if self.mode == "shared_table":
            return (self.adaln_table[None] + pooled[:, None]).unsqueeze(1).unbind(2)  # (B, 1, 6, D) → 6 × (B, 1, D)
        return None

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, angles: torch.Tensor, *,
                attn_mask: torch.Tensor | None, cache: dict | None = None) -> torch.Tensor:
        mod = self.modulation(pooled)
        if mod is None:
            x = x + self.attn(self.norm(x), angles, attn_mask=attn_mask, cache=cache)
            return x + self.ffn(self.norm(x))
        g1, g2, s1, s2, b1, b2 = mod
        x = x + self.attn(self.norm(x).mul(1 + s1).add(b1), angles, attn_mask=attn_mask, cache=cache).mul(g1)
        return x + self.ffn(self.norm(x).mul(1 + s2).add(b2)).mul(g2)


def sample_top_k_top_p(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """VAR's ``sample_with_top_k_top_p_`` (README 4.4): logits (B, l, V) → ids (B, l). top_k = 1 is argmax."""
    B, l, V = logits.shape
    if top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits.clone()
    if top_k > 0:
        kth = logits.topk(min(top_k, V), dim=-1).values[..., -1:]
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(-1, order, remove), -torch.inf)
    probs = logits.softmax(dim=-1).view(B * l, V)
    if generator is not None and generator.device != probs.device:  # torch samples on the generator's device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l).to(logits.device)


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
        self.blocks = nn.ModuleList([HartBlock(config) for _ in range(config.depth)])
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
        head_pooled = tokens.max(dim=1).values  # padding included (quirk Q8)
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
    def start(self, cond: HartCondition, caches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the condition tokens (level 0) into fresh per-block caches; returns (logits of scale 0
        (B, 1, V), hidden (B, 1, D)) from the last condition token."""
        cfg = self.config
        x = cond.tokens + self.level_embed.weight[0]
        angles = rope_angles_1d(cond.positions, cfg.head_dim)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cond.pooled, angles, attn_mask=None, cache=cache)
        x = x[:, -1:]
        return self._head(x, cond), x

    def step(self, si: int, inputs: torch.Tensor, cond: HartCondition, caches: list[dict]
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed scale si's inputs (B, pn², C); returns (logits (B, pn², V), hidden (B, pn², D))."""
        x = self.word_embed(inputs.to(cond.tokens.dtype)) + self.level_embed.weight[si]
        angles = self.scale_angles(si, cond.offset)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cond.pooled, angles, attn_mask=None, cache=cache)
        return self._head(x, cond), x

    # -- training -----------------------------------------------------------------------------------------
    def mask_last_scale(self, batch: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """MAR masking of the last scale (README 5.3): one rate ~ truncnorm on [mask_ratio_min, 1] (mean 1,
        std 0.25) per batch, n = min(⌈pn²·rate⌉, pn² − min_kept_tokens) tokens removed per sample in a random
        order. Returns the kept raster indices (B, pn² − n), ascending."""
        cfg = self.config
        last = cfg.scales[-1] ** 2
        rate = torch.empty(1)
        nn.init.trunc_normal_(rate, mean=1.0, std=0.25, a=cfg.mask_ratio_min, b=1.0, generator=generator)
        n_masked = max(0, min(math.ceil(last * float(rate)), last - cfg.min_kept_tokens))
        order = torch.rand(batch, last, generator=generator).argsort(dim=1)
        return order[:, n_masked:].sort(dim=1).values.to(device)

    def training_losses(self, ids: list[torch.Tensor], inputs: torch.Tensor, condition: torch.Tensor, *,
                        residual: torch.Tensor, codebook: torch.Tensor, context_mask: torch.Tensor | None = None,
                        context_position_ids: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                        drop: torch.Tensor | None = None, generator: torch.Generator | None = None
                        ) -> dict[str, torch.Tensor]:
        """HART's training forward (``HARTForT2I.forward``): condition dropout, MAR masking of the last scale,
        cross-entropy of every kept token, and the diffusion loss of the kept last-scale tokens.

        ids: per scale (B, pn²) and inputs = ``tok.teacher_inputs(ids)``; residual (B, C, h, w): the
        tokenizer's continuous residual (``tok.tokenize_hybrid``); codebook (V, C): the code vectors
        (``tok.indices_to_codes(arange(V))``). The diffusion target of a kept token is its residual before the
        last code minus the code of an id the model itself samples there (top-k ``train_top_k``, top-p
        ``train_top_p``), so the head learns to correct the transformer's own choices. ``keep`` and ``drop``
        default to fresh draws (``drop`` only in training mode). Returns ``loss`` = ``ce`` + ``diffusion``,
        and ``accuracy``.
        """
        cfg = self.config
        B = inputs.shape[0]
        H = cfg.scales[-1]
        if residual.shape != (B, cfg.latent_channels, H, H):
            raise ValueError(f"residual must be (B, C, h, w) = ({B}, {cfg.latent_channels}, {H}, {H}), "
                             f"got {tuple(residual.shape)}")
        if codebook.shape != (cfg.codebook_size, cfg.latent_channels):
            raise ValueError(f"codebook must be (V, C) = ({cfg.codebook_size}, {cfg.latent_channels}), "
                             f"got {tuple(codebook.shape)}")
        if keep is None:
            keep = self.mask_last_scale(B, device=inputs.device, generator=generator)
        if drop is None and self.training and cfg.class_dropout > 0:
            drop = torch.rand(B, generator=generator).to(inputs.device) < cfg.class_dropout
        out = self(inputs, condition, context_mask=context_mask, context_position_ids=context_position_ids,
                   keep=keep, drop=drop)
        last_ids = torch.gather(ids[-1], 1, keep)  # (B, n)
        targets = torch.cat([*ids[:-1], last_ids], dim=1)  # (B, 1 + … + n)
        ce = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
        accuracy = (out.logits.argmax(-1) == targets).float().mean()

        n = keep.shape[1]
        with torch.no_grad():
            sampled = sample_top_k_top_p(out.logits[:, -n:].float(), top_k=cfg.train_top_k, top_p=cfg.train_top_p,
                                         generator=generator).to(inputs.device)
        sampled_codes = codebook[sampled]  # (B, n, C)
        before_last = rearrange(residual, "b c h w -> b (h w) c") + codebook[ids[-1]]  # f_rest before the last code
        target = torch.gather(before_last, 1, keep[..., None].expand(-1, -1, cfg.latent_channels)) - sampled_codes
        z = self.diffusion_condition(out.hidden, sampled_codes)  # (B, n, D)
        mul = cfg.diffusion_batch_mul
        diffusion = self.diffusion_head.loss(target.detach().flatten(0, 1).repeat(mul, 1),
                                             z.flatten(0, 1).repeat(mul, 1))["loss"].mean()
        return {"loss": ce + diffusion, "ce": ce, "diffusion": diffusion, "accuracy": accuracy}
