"""What every quantizer's training forward returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class QuantizerOutput:
    """quantized: (B, C, H, W) straight-through f̂; ids: per scale (B, pn*pn); losses: named scalars;
    stats: per-batch codebook usage and perplexity (for logging); inputs: per scale the (B*pn*pn, C) fp32
    vectors that chose the codes, differentiable with respect to the latent (for regularisers such as the
    codebook entropy)."""

    quantized: torch.Tensor
    ids: list[torch.Tensor]
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: list[torch.Tensor] = field(default_factory=list)

    @property
    def loss(self) -> torch.Tensor:
        return sum(self.losses.values())
