"""Mixed-scale gated tokens (MSViT; Havtorn et al., 2023, arXiv 2307.02321) as a tokenizer encoder.

The image is cut into coarse regions of (p·s)² pixels, each of which can be one coarse token or s² fine
tokens of p² pixels. A small MLP gate reads each coarse token and decides fine or coarse; only the chosen
tokens enter the transformer, so flat regions cost one token instead of s². The decision is hard in the
forward pass; during training the gate samples it with a Gumbel-sigmoid and learns through the
straight-through estimator, since every chosen token is multiplied by its gate value (fine tokens by g,
coarse tokens by 1 − g, both exactly 1 in the forward pass). A compute-target loss holds the mean fine
probability at ``target_fine_fraction`` (the simple alternative to the paper's batch-shaping loss that the
paper also discusses). After the last block every token is scattered back to the fine cells it covers.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from artok.encoders.vit import ViTEncoder

COARSE_EMBEDDINGS = ("weights", "pixels")


def gumbel_sigmoid(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Relaxed Bernoulli sample sigmoid((logits + logistic noise) / temperature); > 0.5 ⇔ logits + noise > 0."""
    u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + u.log() - (-u).log1p()) / temperature)


def straight_through(soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard, gate): hard = 1[soft > 0.5]; gate equals hard in value and has the gradient of soft."""
    hard = (soft > 0.5).to(soft.dtype)
    return hard, hard + (soft - soft.detach())  # exactly hard in value: the bracket is exactly zero


class MixedScaleGate(nn.Sequential):
    """coarse tokens (B, R, D) → fine-vs-coarse logits (B, R, 1): LayerNorm → Linear → GELU → Linear.

    The output bias starts at logit(target) so the gate begins near the compute target.
    """

    def __init__(self, width: int, hidden: int, target: float) -> None:
        super().__init__(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.normal_(self[-1].weight, std=0.02)
        target = min(max(target, 1e-3), 1 - 1e-3)
        nn.init.constant_(self[-1].bias, math.log(target / (1 - target)))


class MixedScaleViTEncoder(ViTEncoder):
    """ViT encoder over gated mixed-scale tokens: images (B, 3, H, W) → (B, C, H/p, W/p).

    ``forward(images, fine_mask=...)`` takes explicit decisions (B, H/(p·s), W/(p·s)), True for fine, in
    place of the gate (analysis and tests); all-True gives exactly the plain ViT encoder's output.
    """

    def __init__(self, *, coarse_factor: int = 2, gate_hidden: int = 64, target_fine_fraction: float = 0.5,
                 gate_temperature: float = 1.0, gate_loss_weight: float = 1.0, coarse_embedding: str = "weights",
                 **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        if coarse_factor < 2:
            raise ValueError(f"coarse_factor must be >= 2, got {coarse_factor}")
        if self.grid_size % coarse_factor:
            raise ValueError(f"the token grid {self.grid_size}x{self.grid_size} (image_size / patch_size) is not "
                             f"divisible by coarse_factor {coarse_factor}")
        if coarse_embedding not in COARSE_EMBEDDINGS:
            raise ValueError(f"coarse_embedding must be one of {COARSE_EMBEDDINGS}, got '{coarse_embedding}'")
        self.coarse_factor, self.coarse_embedding = coarse_factor, coarse_embedding
        self.target_fine_fraction, self.gate_temperature = target_fine_fraction, gate_temperature
        self.gate_loss_weight = gate_loss_weight
        self.gate = MixedScaleGate(self.width, gate_hidden, target_fine_fraction)
        s, gc = coarse_factor, self.grid_size // coarse_factor
        offset = (s - 1) / 2  # a coarse token sits at the centre of its s × s fine cells
        self.register_buffer("coarse_centres", (self._coarse_grid(gc) * s + offset), persistent=False)

    @staticmethod
    def _coarse_grid(side: int) -> torch.Tensor:
        rows = torch.arange(side, dtype=torch.float32)
        return torch.stack(torch.meshgrid(rows, rows, indexing="ij"), dim=-1).reshape(-1, 2)  # (R, 2)

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine tokens grouped by region (B, R, s², D) and coarse tokens (B, R, D), positions added."""
        self.check_images(images)
        s = self.coarse_factor
        gc = self.grid_size // s
        fine = rearrange(self.patch_embed(images), "b d (y i) (x j) -> b (y x) (i j) d", i=s, j=s)
        fine = fine + rearrange(self.pos_embed.table(), "(y i x j) d -> (y x) (i j) d", y=gc, i=s, x=gc, j=s)
        coarse = self.patch_embed(images, factor=s, resize=self.coarse_embedding)
        coarse = rearrange(coarse, "b d y x -> b (y x) d") + self.pos_embed.at(self.coarse_centres)
        return fine, coarse

    def decide(self, logits: torch.Tensor, fine_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hard decisions, gate values) (B, R): Gumbel-sigmoid + straight-through when training, the sign
        of the logit in eval mode, or the given mask."""
        if fine_mask is not None:
            if fine_mask.numel() != logits.numel():
                side = self.grid_size // self.coarse_factor
                raise ValueError(f"fine_mask must hold {logits.shape[0]}x{side}x{side} decisions, "
                                 f"got shape {tuple(fine_mask.shape)}")
            hard = fine_mask.reshape(logits.shape).to(logits.dtype)
            return hard, hard
        if self.training:
            return straight_through(gumbel_sigmoid(logits, self.gate_temperature))
        hard = (logits > 0).to(logits.dtype)
        return hard, hard

    def forward(self, images: torch.Tensor, *, fine_mask: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        fine, coarse = self.tokens(images)  # (B, R, m, D), (B, R, D)
        B, R, m, D = fine.shape
        logits = self.gate(coarse).squeeze(-1)  # (B, R)
        hard, gate = self.decide(logits, fine_mask)
        # candidate slots per region: m fine tokens then the coarse one, scaled by their gate values
        candidates = torch.cat([fine * gate[..., None, None], (coarse * (1 - gate)[..., None])[:, :, None]], 2)
        is_fine = hard.bool()
        keep = torch.cat([is_fine[..., None].expand(B, R, m), ~is_fine[..., None]], dim=2)  # (B, R, m+1)
        keep = keep.reshape(B, R * (m + 1))
        counts = keep.sum(1)  # (B,) tokens per image
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept slots first, in slot order
        n = int(counts.max())
        x = candidates.reshape(B, R * (m + 1), D).gather(1, order[:, :n, None].expand(-1, -1, D))  # (B, n, D)
        bias = None
        if bool((counts < n).any()):  # pad to the longest image; padded keys get −inf
            valid = torch.arange(n, device=x.device) < counts[:, None]
            bias = torch.zeros(B, 1, 1, n, device=x.device, dtype=x.dtype).masked_fill(~valid[:, None, None], -math.inf)
        for block in self.blocks:
            x = block(x, bias=bias)
        x = self.head(x)  # (B, n, C)
        # scatter back: every fine cell reads its own slot, or its region's coarse slot
        position = torch.empty_like(order).scatter_(1, order, torch.arange(R * (m + 1), device=x.device).expand(B, -1))
        region = torch.arange(R, device=x.device)[:, None] * (m + 1)
        slot = torch.where(is_fine[..., None], region + torch.arange(m, device=x.device), region + m)  # (B, R, m)
        source = position.gather(1, slot.reshape(B, R * m))  # (B, R·m) index into x
        out = x.gather(1, source[..., None].expand(-1, -1, x.shape[-1]))  # (B, R·m, C)
        s, gc = self.coarse_factor, self.grid_size // self.coarse_factor
        fine_probability = logits.sigmoid().mean()
        self.last_losses = {
            "gate_compute": self.gate_loss_weight * (fine_probability - self.target_fine_fraction) ** 2
        }
        self.record([counts.float().mean()] * self.depth, encoder_fine_fraction=hard.mean().detach())
        self.last_fine_mask = is_fine.reshape(B, gc, gc)  # the decisions, for inspection
        return rearrange(out, "b (y x i j) c -> b c (y i) (x j)", y=gc, x=gc, i=s, j=s)
