"""Teacher forcing inside a sampling loop: the ids (and, for HART, the residual) that a caller fixes, per block,
instead of letting the loop sample them. ``generate(..., prefix=...)`` fixes whole first blocks;
``artok.sampling.edit`` fixes the tokens outside a mask at every scale."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Forced:
    """ids: per block (B, n_k) reference ids; keep: per block (B, n_k) bool, True where the reference id is
    taken (blocks past the end of the lists are sampled freely); residual and residual_keep (HART): the
    reference residual (B, C, h, w) and (B, 1, h, w) bool, True where it is taken."""

    ids: list[torch.Tensor]
    keep: list[torch.Tensor]
    residual: torch.Tensor | None = None
    residual_keep: torch.Tensor | None = None

    @classmethod
    def prefix(cls, ids: list[torch.Tensor]) -> "Forced":
        return cls(ids=list(ids), keep=[torch.ones_like(i, dtype=torch.bool) for i in ids])

    @staticmethod
    def checked(forced: "Forced | None", block_sizes, batch: int, codebook_size: int) -> "Forced":
        """``forced`` (None: nothing forced) checked against a loop's blocks, batch and codebook."""
        return (forced or Forced(ids=[], keep=[])).check(block_sizes, batch, codebook_size)

    def check(self, block_sizes, batch: int, codebook_size: int) -> "Forced":
        if len(self.ids) > len(block_sizes) or len(self.keep) != len(self.ids):
            raise ValueError(f"forcing gives {len(self.ids)} blocks of ids and {len(self.keep)} of masks; the "
                             f"generator has {len(block_sizes)} blocks")
        for k, (ids, keep) in enumerate(zip(self.ids, self.keep)):
            if tuple(ids.shape) != (batch, block_sizes[k]) or tuple(keep.shape) != tuple(ids.shape):
                raise ValueError(f"prefix block {k} has shape {tuple(ids.shape)}, expected ({batch}, {block_sizes[k]})")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codebook_size):
                raise ValueError(f"prefix block {k} has ids outside [0, {codebook_size - 1}]")
        return self

    def apply(self, k: int, sampled: torch.Tensor) -> torch.Tensor:
        """Block k's ids: the reference where kept, the sampled ids elsewhere."""
        if k >= len(self.ids):
            return sampled
        return torch.where(self.keep[k].to(sampled.device), self.ids[k].to(sampled.device), sampled)

    def apply_residual(self, sampled: torch.Tensor) -> torch.Tensor:
        if self.residual is None:
            return sampled
        keep = self.residual_keep.to(sampled.device)
        return torch.where(keep, self.residual.to(sampled.device, sampled.dtype), sampled)
