"""Training-free acceleration of VAR sampling, each off by default and each approximate (they change the
samples; ``benchmarks/acceleration.py`` measures what they buy and what they cost):

- ``guidance_off_last``: no unconditional pass in the last n blocks (Switti, arXiv 2412.01819, reports
  guidance barely matters at the largest scales). The unconditional rows are dropped from the batch and the
  KV cache from that block on, so those blocks cost half.
- ``merge_last`` / ``merge_ratio``: token merging in the last n blocks (FastVAR, arXiv 2503.23367, prunes the
  largest scales' tokens): every transformer block runs on the block's tokens with ``merge_ratio`` of them
  merged into their most similar partner by ToMe's bipartite matching (``Generator.step(merge=)``).
- ``draft`` / ``draft_last``: a smaller generator trained on the same tokenizer predicts the last n blocks
  (CoDe, arXiv 2411.17787: the large model drafts the content at the small scales, the small one refines
  the large scales). At the switch the draft model reads the blocks sampled so far into its own KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Acceleration:
    guidance_off_last: int = 0
    merge_last: int = 0
    merge_ratio: float = 0.5
    draft: Any = None
    draft_last: int = 0

    def checked(self, model, num_blocks: int) -> "Acceleration":
        """Raise ValueError naming the problem when an option does not fit a model of ``num_blocks`` blocks."""
        for name, most in (("guidance_off_last", num_blocks), ("merge_last", num_blocks), ("draft_last", num_blocks - 1)):
            n = getattr(self, name)
            if not isinstance(n, int) or not 0 <= n <= most:
                raise ValueError(f"{name} must be a number of blocks in [0, {most}], got {n!r}")
        if not 0.0 <= self.merge_ratio <= 0.5:  # bipartite matching merges each token of one half at most
            raise ValueError(f"merge_ratio must be in [0, 0.5] (ToMe's bipartite matching removes at most half "
                             f"the tokens), got {self.merge_ratio}")
        if (self.draft is None) != (self.draft_last == 0):
            raise ValueError("give a draft model and draft_last > 0 together, or neither")
        if self.draft is not None:
            mine, theirs = model.config, self.draft.config
            differ = [f for f in ("scales", "codebook_size", "latent_channels", "num_classes", "block_unit")
                      if getattr(mine, f) != getattr(theirs, f)]
            if differ:
                raise ValueError("the draft model must model the same ids as the generator; they differ in "
                                 + ", ".join(differ))
        return self

    def guided_at(self, k: int, num_blocks: int) -> bool:
        return k < num_blocks - self.guidance_off_last

    def merge_at(self, k: int, num_blocks: int) -> float:
        return self.merge_ratio if k >= num_blocks - self.merge_last else 0.0

    def draft_from(self, num_blocks: int) -> int | None:
        """The first block the draft model predicts (None without one)."""
        return None if self.draft is None else num_blocks - self.draft_last
