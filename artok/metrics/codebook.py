"""Codebook statistics of token ids: usage and perplexity per scale."""
from __future__ import annotations

import torch


class CodebookCounter:
    """Accumulates code histograms per scale over batches of ids (list per scale of (B, pn*pn))."""

    def __init__(self, codebook_size: int, scales: tuple[int, ...]) -> None:
        self.codebook_size, self.scales = codebook_size, tuple(scales)
        self.hits = torch.zeros(len(self.scales), codebook_size, dtype=torch.float64)

    def update(self, ids: list[torch.Tensor]) -> None:
        if len(ids) != len(self.scales):
            raise ValueError(f"expected ids for {len(self.scales)} scales, got {len(ids)}")
        for k, idx in enumerate(ids):
            self.hits[k] += torch.bincount(idx.reshape(-1).cpu(), minlength=self.codebook_size).double()

    def usage(self) -> torch.Tensor:
        """(S,) fraction of codes used at least once at each scale."""
        return (self.hits > 0).double().mean(1)

    def perplexity(self) -> torch.Tensor:
        """(S,) exp(entropy) of each scale's code histogram (1 = one code, V = uniform)."""
        p = self.hits / self.hits.sum(1, keepdim=True).clamp_min(1)
        return torch.exp(-(p * p.clamp_min(1e-300).log()).sum(1))

    def summary(self) -> list[dict]:
        usage, perplexity = self.usage(), self.perplexity()
        return [{"scale": pn, "tokens": int(self.hits[k].sum()), "usage": float(usage[k]),
                 "codes_used": int((self.hits[k] > 0).sum()), "perplexity": float(perplexity[k])}
                for k, pn in enumerate(self.scales)]
