"""What the VAR and HART loops share: the output record, the autocast dtype, guidance, the logits filter
(the only one in artok), sampling of ids and VAR's Gumbel soft codes.

Everything here is float32 tensor math on logits (B, l, V); nothing knows about a model or a tokenizer.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

CFG_SCHEDULES = ("linear", "constant")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class GenerationOutput:
    """ids: per scale (B, pn²), smallest first; latent: (B, C, h, w), what the decoder receives; images:
    (B, 3, H, W) in [-1, 1] (None with ``decode=False``); logits: the guided logits of each block (B, l, V)
    before filtering, when asked for."""

    ids: list[torch.Tensor]
    latent: torch.Tensor
    images: torch.Tensor | None
    logits: list[torch.Tensor] | None = field(default=None, repr=False)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """The autocast dtype of a loop: None → float32; a torch dtype or one of ``DTYPES``' names."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast in ``dtype`` on ``device``'s type; no autocast at all for float32."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def check_filtering(top_k: int, top_p: float) -> None:
    """Raise ValueError unless top_k >= 0 and 0 <= top_p < 1 (the ranges ``filter_logits`` takes)."""
    if top_k < 0 or not 0.0 <= top_p < 1.0:
        raise ValueError(f"need top_k >= 0 and 0 <= top_p < 1, got top_k={top_k}, top_p={top_p}")


# ---------------------------------------------------------------------------------------------------------
# Guidance, filtering, sampling
# ---------------------------------------------------------------------------------------------------------

def guidance_strength(cfg_scale: float, block: int, num_blocks: int, schedule: str = "linear") -> float:
    """t of block ``block``: VAR's linear ramp cfg·k/(K − 1) (0 at the first block, cfg at the last), or
    the constant cfg."""
    if schedule == "constant":
        return cfg_scale
    if schedule != "linear":
        raise ValueError(f"unknown cfg schedule '{schedule}'; choose one of {', '.join(CFG_SCHEDULES)}")
    return cfg_scale * (block / (num_blocks - 1) if num_blocks > 1 else 1.0)


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set to −inf every logit outside the top-k and outside the nucleus of mass top_p (VAR's
    ``sample_with_top_k_top_p_``). logits: (..., V), returned as a new tensor; 0 disables either filter,
    and top-k is applied first, so top-p measures mass among the top-k survivors.

    Ties. top_k keeps exactly k entries per row: when several logits equal the k-th largest, only as many of
    them as fit in k survive, and which ones is ``torch.topk``'s choice (not specified by torch; not
    necessarily the lowest indices). VAR keeps every entry tied with the k-th, so the two agree unless the
    k-th and (k+1)-th logits are exactly equal. top_p sorts ascending and drops every entry whose cumulative
    probability is ≤ 1 − top_p, so an entry whose cumulative mass equals 1 − top_p exactly is dropped; equal
    logits at that boundary can be split (the cumulative sum grows within the tie, in ``torch.sort``'s
    unspecified order), and the largest logit is never dropped.
    """
    V = logits.shape[-1]
    if 0 < top_k < V and top_p > 0.0:
        # Both filters: the nucleus is measured among the k survivors only, so sort those k (topk returns them
        # sorted) instead of all V. The entries dropped by top-k carry zero probability in VAR's full-width
        # ascending cumulative sum, so the kept set is VAR's (the probabilities are summed over k terms instead
        # of V, which can move a cumulative sum lying within float rounding of 1 − top_p).
        values, order = logits.topk(top_k, dim=-1, sorted=True)  # (..., k), descending
        ascending = values.flip(-1)
        remove = ascending.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, ~remove.flip(-1))
        return logits.masked_fill(~keep, -torch.inf)
    if top_k > 0 and top_k < V:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.topk(top_k, dim=-1, sorted=False).indices, True)
        logits = logits.masked_fill(~keep, -torch.inf)
    if top_p > 0.0:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)
    return logits


def _on(generator: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    """x moved to the generator's device (torch samplers need both on one device)."""
    return x if generator is None or generator.device == x.device else x.to(generator.device)


def sample_ids(logits: torch.Tensor, *, generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
    """One id per row of filtered logits (B, l, V) → (B, l): argmax when greedy, else one
    ``torch.multinomial`` draw over all B·l rows (the official order of random numbers)."""
    B, l, V = logits.shape
    if greedy:
        return logits.argmax(dim=-1)
    probs = _on(generator, logits.softmax(dim=-1).view(B * l, V))
    return torch.multinomial(probs, 1, replacement=True, generator=generator).view(B, l).to(logits.device)


def gumbel_soft_assignment(logits: torch.Tensor, ratio: float, *, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """VAR's "more smooth" option: softmax((logits·(1 + ratio) + G)/τ) with Gumbel noise G = −log Exp(1)
    and τ = max(0.27·(1 − 0.95·ratio), 0.005) (MaskGIT's annealing). logits: (B, l, V) → weights (B, l, V)."""
    tau = max(0.27 * (1 - ratio * 0.95), 0.005)
    exp = _on(generator, torch.empty_like(logits)).exponential_(generator=generator)
    gumbels = -exp.log().to(logits.device)
    return ((logits * (1 + ratio) + gumbels) / tau).softmax(dim=-1)


def shape_problems(cfg, tok) -> list[str]:
    """What a generator config (VAR or HART) and a tokenizer disagree on: codebook size, latent channels,
    scales (for the error messages of ``check_compatible`` and ``check_hart_compatible``)."""
    problems = []
    if cfg.codebook_size != tok.codebook_size:
        problems.append(f"codebook size: generator {cfg.codebook_size}, tokenizer {tok.codebook_size}")
    if cfg.latent_channels != tok.latent_channels:
        problems.append(f"latent channels: generator {cfg.latent_channels}, tokenizer {tok.latent_channels}")
    if tuple(cfg.scales) != tuple(tok.scales):
        problems.append(f"scales: generator {tuple(cfg.scales)}, tokenizer {tuple(tok.scales)}")
    return problems
