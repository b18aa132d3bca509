"""Block-by-block autoregressive sampling: VAR's next-scale loop (docs/reference-behaviour.md 4.4), raster order alike.

``generate_var(model, tok, labels, cfg_scale=...)`` composes a generator (``artok.models.Generator``) and a
tokenizer: the generator predicts the logits of one block (a scale, or one token) through its KV cache,
the logits are guided, filtered and sampled, and the tokenizer turns the sampled ids into the next block's
input (``tok.autoregressive_step``) and finally into images (``tok.decode``).

Classifier-free guidance follows VAR: logits = (1 + t)·cond − t·uncond with t = cfg·k/(K − 1) over the K
blocks (``cfg_schedule="linear"``), or t = cfg at every block (``"constant"``). Sampling with the same
``torch.Generator`` seed on CPU reproduces the official sampler bit for bit.
"""
from __future__ import annotations

import torch

from artok.sampling.acceleration import Acceleration
from artok.sampling.forcing import Forced
from artok.sampling.logits import (CFG_SCHEDULES, GenerationOutput, autocast, check_filtering, filter_logits,
                                   guidance_strength, gumbel_soft_assignment, resolve_dtype, sample_ids,
                                   shape_problems)


def check_compatible(model, tok) -> None:
    """Raise ValueError when a generator and a tokenizer cannot work together (codebook size, latent
    channels, scales, block structure), naming every disagreement."""
    cfg = model.config
    problems = shape_problems(cfg, tok)
    if tuple(cfg.scales) == tuple(tok.scales) and list(cfg.block_sizes) != list(tok.block_sizes):
        unit = {"scale": "one scale", "token": "one token"}[cfg.block_unit]
        problems.append(f"steps: the generator predicts {unit} per step ({len(cfg.block_sizes)} steps), the "
                        f"tokenizer takes {len(tok.block_sizes)} steps of {sorted(set(tok.block_sizes))} tokens")
    if problems:
        raise ValueError("the tokenizer and the generator disagree: " + "; ".join(problems))


@torch.no_grad()
def generate_var(model, tok, labels, *, cfg_scale: float, top_k: int = 0, top_p: float = 0.0,
                 generator: torch.Generator | None = None, temperature: float = 1.0, cfg_schedule: str = "linear",
                 more_smooth: bool = False, dtype: torch.dtype | str | None = None, decode: bool = True,
                 return_logits: bool = False, forced: Forced | None = None,
                 acceleration: Acceleration | None = None) -> GenerationOutput:
    """Sample token ids block by block with a KV cache and decode them.

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
        forced: which ids to take from a reference instead of sampling, per block and token (``Forced``:
            ``generate(..., prefix=)`` and ``artok.sampling.edit`` build it); None samples every block.
        acceleration: training-free speed-ups (``artok.sampling.Acceleration``); None is the exact sampler.
    """
    check_compatible(model, tok)
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"unknown cfg schedule '{cfg_schedule}'; choose one of {', '.join(CFG_SCHEDULES)}")
    check_filtering(top_k, top_p)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dtype = resolve_dtype(dtype)
    labels = model.check_labels(labels)
    B, device = labels.shape[0], labels.device
    forced = Forced.checked(forced, model.block_sizes, B, tok.codebook_size)
    guided = cfg_scale != 0
    mixed = autocast(device, dtype)
    sizes = model.block_sizes
    K = len(sizes)
    acc = (acceleration or Acceleration()).checked(model, K)

    if guided:
        labels = torch.cat((labels, torch.full_like(labels, model.null_class)))  # cond rows, then null rows
    cond = model.condition(labels)  # (nB, D)
    cache = model.new_cache()
    with mixed:
        x = model.start_tokens(cond)
    code_table = tok.indices_to_codes(torch.arange(tok.codebook_size, device=device)) if more_smooth else None

    f_hat, ids, all_logits, start = None, [], [], 0
    history = []  # the tokenizer's input of every block after the first, kept for a draft model to catch up
    for k, size in enumerate(sizes):
        if k == acc.draft_from(K):
            model, cond, cache, x = _switch_to_draft(acc.draft, labels, history, sizes, rows=x.shape[0], mixed=mixed)
        if guided and not acc.guided_at(k, K):  # guidance off from here: drop the unconditional rows
            guided, labels, cond, x = False, labels[:B], cond[:B], x[:B]
            cache.keep_rows(B)
        merge = acc.merge_at(k, K)
        with mixed:  # (duck-typed generators need not take merge=)
            logits = (model.step(x, cond, cache, merge=merge) if merge else model.step(x, cond, cache)).float()
        ratio = k / (len(sizes) - 1) if len(sizes) > 1 else 1.0
        if guided:
            t = guidance_strength(cfg_scale, k, len(sizes), cfg_schedule)
            logits = (1 + t) * logits[:B] - t * logits[B:]
        if return_logits:
            all_logits.append(logits)
        if temperature != 1.0:
            logits = logits / temperature
        logits = filter_logits(logits, top_k=top_k, top_p=top_p)
        block_ids = forced.apply(k, sample_ids(logits, generator=generator, greedy=top_k == 1))  # (B, l)
        ids.append(block_ids)
        if more_smooth:
            codes = gumbel_soft_assignment(logits, ratio, generator=generator) @ code_table  # (B, l, C)
            f_hat, nxt = tok.autoregressive_step(k, f_hat, block_ids, codes=codes)
        else:
            f_hat, nxt = tok.autoregressive_step(k, f_hat, block_ids)
        start += size
        if nxt is not None:
            if acc.draft is not None:
                history.append(nxt)
            with mixed:
                x = model.embed_block(nxt, start)
            if guided:
                x = x.repeat(2, 1, 1)  # (nB, l, D)
    images = None
    if decode:
        with mixed:
            images = tok.decode(f_hat).float()
    return GenerationOutput(ids=tok.split_ids(torch.cat(ids, dim=1)), latent=f_hat, images=images,
                            logits=all_logits if return_logits else None)


def _switch_to_draft(draft, labels, history, sizes, *, rows: int, mixed):
    """The draft model's condition, a KV cache holding the blocks sampled so far, and its input of the next
    block. labels: the rows' labels (conditional, then null rows when guiding); history: the tokenizer's input
    of blocks 1..k (B, l, C) each; rows: the batch the loop runs (B, or 2B when guiding)."""
    cond = draft.condition(labels)
    cache = draft.new_cache()
    start = sizes[0]
    with mixed:
        x = draft.start_tokens(cond)
        for nxt in history:  # feed each sampled block, then embed the next one's input
            draft.step(x, cond, cache)
            x = draft.embed_block(nxt, start).repeat(rows // nxt.shape[0], 1, 1)
            start += nxt.shape[1]
    return draft, cond, cache, x
