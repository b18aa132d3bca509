"""Token merging (ToMe; Bolya et al., 2023, arXiv 2210.09461) as a tokenizer encoder.

A functional core and a thin adapter. The core: ``bipartite_soft_matching`` pairs tokens by the cosine
similarity of their attention keys and returns ``merge`` / ``unmerge`` callables; ``merge_weighted_average``
merges with size weights and tracks how many original patches each token stands for;
``proportional_attention_bias`` turns those sizes into the log-size logit bias of the paper's proportional
attention; ``merge_schedule`` gives r per layer. The adapter, ``TokenMergeViTEncoder``, merges r tokens in
every block between attention and MLP and, after the last block, unmerges back to the full grid: every
original patch takes the value of the token it was merged into, so the quantizer sees the usual latent grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from artok.encoders.vit import ViTEncoder

MERGE_SCHEDULES = ("constant", "decreasing")


# ---------------------------------------------------------------------------------------------------------
# Functional core
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Matching:
    """One merging step over N tokens that removes r of them.

    merge(x, mode): (B, N, C) → (B, N − r, C); each merged pair is reduced with ``mode`` ("sum", "mean",
    "amax", ...) and the output holds the unmerged A tokens first, then all B tokens, each in input order.
    unmerge(x): (B, N − r, C) → (B, N, C); every input token takes the value of the token it went to.
    destination: (B, N) index into the merged sequence of each input token.
    """

    merge: Callable[..., torch.Tensor]
    unmerge: Callable[[torch.Tensor], torch.Tensor]
    destination: torch.Tensor
    r: int


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, M) → (B, M, C)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def identity_matching(batch: int, num_tokens: int, *, device=None) -> Matching:
    """The r = 0 step: merge and unmerge return their input unchanged, in the same order."""
    destination = torch.arange(num_tokens, device=device).expand(batch, num_tokens)
    return Matching(merge=lambda x, mode="mean": x, unmerge=lambda x: x, destination=destination, r=0)


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> Matching:
    """ToMe's bipartite soft matching (paper section 3, "Token Merging").

    metric: (B, N, K), the keys of the preceding attention averaged over heads. Tokens alternate between
    set A (even positions) and set B (odd positions); each A token draws an edge to its most similar B token
    by cosine similarity; the r most similar edges are kept and their A tokens are merged into their B
    partners. Being bipartite, the merges of one step never chain, so they run in parallel. r is clamped to
    the size of A; r = 0 is the identity.
    """
    B, N, _ = metric.shape
    r = min(int(r), N // 2)
    if r <= 0:
        return identity_matching(B, N, device=metric.device)
    with torch.no_grad():
        unit = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        set_a, set_b = unit[:, 0::2], unit[:, 1::2]  # (B, Na, K), (B, Nb, K)
        similarity = set_a @ set_b.transpose(1, 2)  # (B, Na, Nb) cosine similarities
        best_score, best_partner = similarity.max(dim=-1)  # each A token's most similar B token
        order = best_score.argsort(dim=-1, descending=True)  # (B, Na) strongest edges first
        merged_a, kept_a = order[:, :r], order[:, r:]  # A tokens that merge / that stay
        partner = best_partner.gather(1, merged_a)  # (B, r) B index each merged A token goes to
        num_kept = kept_a.shape[1]
        # destination of every input token in the merged sequence [kept A..., B...]
        destination = torch.empty(B, N, dtype=torch.long, device=metric.device)
        a_positions = torch.arange(0, N, 2, device=metric.device).expand(B, -1)  # (B, Na)
        b_positions = torch.arange(1, N, 2, device=metric.device)
        destination[:, 1::2] = num_kept + torch.arange(b_positions.numel(), device=metric.device)
        destination.scatter_(1, a_positions.gather(1, kept_a),
                             torch.arange(num_kept, device=metric.device).expand(B, -1))
        destination.scatter_(1, a_positions.gather(1, merged_a), num_kept + partner)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        x_a, x_b = x[:, 0::2], x[:, 1::2]
        kept = _gather_tokens(x_a, kept_a)  # (B, Na − r, C)
        incoming = _gather_tokens(x_a, merged_a)  # (B, r, C)
        x_b = x_b.scatter_reduce(1, partner[..., None].expand(-1, -1, x.shape[-1]), incoming, reduce=mode)
        return torch.cat([kept, x_b], dim=1)  # (B, N − r, C)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        return _gather_tokens(x, destination)  # (B, N, C)

    return Matching(merge=merge, unmerge=unmerge, destination=destination, r=r)


def merge_weighted_average(matching: Matching, x: torch.Tensor,
                           size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge x (B, N, C) as the size-weighted average of each merged group; size (B, N, 1) counts the
    original patches behind each token and is summed. Returns (B, N − r, C) and (B, N − r, 1)."""
    if matching.r == 0:
        return x, size
    total = matching.merge(x * size, mode="sum")
    size = matching.merge(size, mode="sum")
    return total / size, size


def proportional_attention_bias(size: torch.Tensor) -> torch.Tensor:
    """size (B, N, 1) → additive logit bias (B, 1, 1, N): softmax(QKᵀ/√d + log s) lets a token that stands
    for s patches count as s keys (ToMe eq. 1). All-ones sizes give a zero bias."""
    return size.log().transpose(1, 2)[:, None]  # (B, 1, 1, N)


def merge_schedule(num_tokens: int, depth: int, r: int, kind: str = "constant") -> list[int]:
    """Tokens merged in each of ``depth`` layers for an input of ``num_tokens``.

    "constant": r in every layer (the paper's default). "decreasing": from 2r in the first layer linearly
    to 0 in the last (the same total, merged earlier, where tokens are most redundant). Each value is
    clamped to half the tokens left, the most one bipartite step can merge.
    """
    if kind not in MERGE_SCHEDULES:
        raise ValueError(f"merge schedule must be one of {MERGE_SCHEDULES}, got '{kind}'")
    if r < 0:
        raise ValueError(f"tokens merged per layer must be >= 0, got {r}")
    if kind == "constant" or depth == 1:
        wanted = [r] * depth
    else:
        wanted = [round(2 * r * (depth - 1 - i) / (depth - 1)) for i in range(depth)]
    schedule, left = [], num_tokens
    for w in wanted:
        step = min(w, left // 2)
        schedule.append(step)
        left -= step
    return schedule


def tokens_per_layer(num_tokens: int, schedule: list[int]) -> list[int]:
    """Tokens entering the attention of each layer under a merge schedule (merging follows attention)."""
    counts, left = [], num_tokens
    for step in schedule:
        counts.append(left)
        left -= step
    return counts


# ---------------------------------------------------------------------------------------------------------
# Adapter
# ---------------------------------------------------------------------------------------------------------

class TokenMergeViTEncoder(ViTEncoder):
    """ViT encoder that merges r tokens per block (ToMe) and unmerges to the full latent grid.

    images (B, 3, H, W) → (B, C, H/p, W/p). With r = 0 it is exactly the plain ViT encoder.
    """

    def __init__(self, *, merge_per_layer: int = 8, schedule: str = "constant", proportional_attention: bool = True,
                 **vit_kwargs) -> None:
        super().__init__(**vit_kwargs)
        self.proportional_attention = proportional_attention
        self.schedule = merge_schedule(self.grid_size ** 2, self.depth, merge_per_layer, schedule)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, C, H/p, W/p)."""
        x = self.embed(images)  # (B, N, D)
        B, N, _ = x.shape
        size = x.new_ones(B, N, 1)
        destination = torch.arange(N, device=x.device).expand(B, N)  # merged index of every original patch
        counts = []
        for block, r in zip(self.blocks, self.schedule):
            counts.append(x.shape[1])
            # all sizes are 1 until the first merge, where the log-size bias is zero
            merged = x.shape[1] < N
            bias = proportional_attention_bias(size) if self.proportional_attention and merged else None
            attended, keys = block.attn(block.norm1(x), bias=bias, return_keys=True)
            x = x + attended
            if r > 0:
                matching = bipartite_soft_matching(keys, r)
                x, size = merge_weighted_average(matching, x, size)  # (B, N', D), (B, N', 1)
                destination = matching.destination.gather(1, destination)
            x = x + block.mlp(block.norm2(x))
        self.record(counts, encoder_merged_tokens=torch.tensor(float(N - x.shape[1])))
        self.last_destination = destination.detach()  # (B, N) merged token of every patch, for inspection
        x = self.head(x)  # (B, N', C): the projection runs on merged tokens only
        return self.to_grid(x.gather(1, destination[..., None].expand(-1, -1, x.shape[-1])))  # unmerge

