"""Block-by-block autoregressive sampling: VAR's next-scale loop (fixture README 4.4), raster order alike.

``generate(model, tok, labels, cfg_scale=...)`` composes a generator (``artok.models.Generator``) and a
tokenizer: the generator predicts the logits of one block (a scale, or one token) through its KV cache,
the logits are guided, filtered and sampled, and the tokenizer turns the sampled ids into the next block's
input (``tok.autoregressive_step``) and finally into images (``tok.decode``).

Classifier-free guidance follows VAR: logits = (1 + t)·cond − t·uncond with t = cfg·k/(K − 1) over the K
blocks (``cfg_schedule="linear"``), or t = cfg at every block (``"constant"``). Sampling with the same
``torch.Generator`` seed on CPU reproduces the official sampler bit for bit.
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


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------

def check_compatible(model, tok) -> None:
    """Raise ValueError when a generator and a tokenizer cannot work together (codebook size, latent
    channels, scales, block structure), naming every disagreement."""
    cfg = model.config
    problems = []
    if cfg.codebook_size != tok.codebook_size:
        problems.append(f"codebook size: generator {cfg.codebook_size}, tokenizer {tok.codebook_size}")
    if cfg.latent_channels != tok.latent_channels:
        problems.append(f"latent channels: generator {cfg.latent_channels}, tokenizer {tok.latent_channels}")
    if tuple(cfg.scales) != tuple(tok.scales):
        problems.append(f"scales: generator {tuple(cfg.scales)}, tokenizer {tuple(tok.scales)}")
    elif list(cfg.block_sizes) != list(tok.block_sizes):
        unit = {"scale": "one scale", "token": "one token"}[cfg.block_unit]
        problems.append(f"steps: the generator predicts {unit} per step ({len(cfg.block_sizes)} steps), the "
                        f"tokenizer takes {len(tok.block_sizes)} steps of {sorted(set(tok.block_sizes))} tokens")
    if problems:
        raise ValueError("the tokenizer and the generator disagree: " + "; ".join(problems))


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


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
    ``sample_with_top_k_top_p_``). logits: (..., V), returned as a new tensor.

    top_k keeps exactly k entries (VAR keeps every entry tied with the k-th; the two agree unless the k-th
    and (k+1)-th logits are exactly equal). top_p sorts ascending, drops the entries whose cumulative
    probability is ≤ 1 − top_p, and never drops the largest.
    """
    V = logits.shape[-1]
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


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def generate(model, tok, labels, *, cfg_scale: float, top_k: int = 0, top_p: float = 0.0,
             generator: torch.Generator | None = None, temperature: float = 1.0, cfg_schedule: str = "linear",
             more_smooth: bool = False, dtype: torch.dtype | str | None = None, decode: bool = True,
             return_logits: bool = False, **hart_options) -> GenerationOutput:
    """Sample token ids block by block with a KV cache and decode them.

    A HART model (``artok.models.HartTransformer``) goes to ``artok.sampling_hart.generate_hart``: the
    discrete scales as here, then the residual diffusion head; ``labels`` are then class ids or text-encoder
    states (B, T, D), and ``hart_options`` takes ``context_mask``, ``context_position_ids``,
    ``diffusion_temperature`` and ``diffusion_noise``.

    Args:
        model: a ``Generator``; tok: the tokenizer whose ids it models (checked with ``check_compatible``).
        labels: (B,) class ids in [0, num_classes]; num_classes is the null (unconditional) class.
        cfg_scale: guidance strength; 0 switches guidance off (no unconditional pass).
        top_k, top_p: filtering (0 disables); ``top_k=1`` is greedy and deterministic.
        generator: a ``torch.Generator`` for reproducible sampling (its device may differ from the model's).
        temperature: divides the guided logits before filtering.
        cfg_schedule: ``linear`` (VAR's ramp over blocks) or ``constant``.
        more_smooth: VAR's Gumbel soft codes for the next input and the latent (ids are still sampled).
        dtype: float32, bfloat16 or float16; the transformer and decoder run under autocast in that dtype;
            guidance and sampling are always float32.
    """
    if getattr(model, "model_type", None) == "hart_transformer":
        from artok.sampling_hart import generate_hart

        if cfg_schedule != "linear":
            raise ValueError(f"HART guides with its own linear schedule; cfg_schedule '{cfg_schedule}' does not apply")
        return generate_hart(model, tok, labels, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p, generator=generator,
                             temperature=temperature, more_smooth=more_smooth, dtype=dtype, decode=decode,
                             return_logits=return_logits, **hart_options)
    if hart_options:
        raise TypeError(f"generate() got options only HART models take: {', '.join(sorted(hart_options))}")
    check_compatible(model, tok)
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown cfg schedule '{cfg_schedule}'; choose one of {', '.join(CFG_SCHEDULES)}")
    if top_k < 0 or not 0.0 <= top_p < 1.0:
        raise ValueError(f"need top_k >= 0 and 0 <= top_p < 1, got top_k={top_k}, top_p={top_p}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dtype = resolve_dtype(dtype)
    labels = model.check_labels(labels)
    B, device = labels.shape[0], labels.device
    guided = cfg_scale != 0
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else nullcontext())

    if guided:
        labels = torch.cat((labels, torch.full_like(labels, model.null_class)))  # cond rows, then null rows
    cond = model.condition(labels)  # (nB, D)
    cache = model.new_cache()
    with autocast:
        x = model.start_tokens(cond)
    code_table = tok.indices_to_codes(torch.arange(tok.codebook_size, device=device)) if more_smooth else None

    sizes = model.block_sizes
    f_hat, ids, all_logits, start = None, [], [], 0
    for k, size in enumerate(sizes):
        with autocast:
            logits = model.step(x, cond, cache).float()  # (nB, l, V)
        ratio = k / (len(sizes) - 1) if len(sizes) > 1 else 1.0
        if guided:
            t = guidance_strength(cfg_scale, k, len(sizes), cfg_schedule)
            logits = (1 + t) * logits[:B] - t * logits[B:]
        if return_logits:
            all_logits.append(logits)
        if temperature != 1.0:
            logits = logits / temperature
        logits = filter_logits(logits, top_k=top_k, top_p=top_p)
        block_ids = sample_ids(logits, generator=generator, greedy=top_k == 1)  # (B, l)
        ids.append(block_ids)
        if more_smooth:
            codes = gumbel_soft_assignment(logits, ratio, generator=generator) @ code_table  # (B, l, C)
            f_hat, nxt = tok.autoregressive_step(k, f_hat, block_ids, codes=codes)
        else:
            f_hat, nxt = tok.autoregressive_step(k, f_hat, block_ids)
        start += size
        if nxt is not None:
            with autocast:
                x = model.embed_block(nxt, start)
            if guided:
                x = x.repeat(2, 1, 1)  # (nB, l, D)
    images = None
    if decode:
        with autocast:
            images = tok.decode(f_hat).float()
    return GenerationOutput(ids=tok.split_ids(torch.cat(ids, dim=1)), latent=f_hat, images=images,
                            logits=all_logits if return_logits else None)
