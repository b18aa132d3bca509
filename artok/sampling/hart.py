"""HART's inference loop (docs/reference-behaviour.md 5.4): next-scale discrete tokens, then the residual diffusion head.

``generate_hart(model, tok, condition, cfg_scale=…)`` composes a ``HartTransformer`` and a
``HybridTokenizer``. Step 0 feeds the condition tokens and reads scale 0's logits at the last of them; scales
1..K−2 follow VAR's loop (guidance t = cfg·k/(K−1)); the last scale is predicted in one pass, its hidden
states and sampled codes condition the diffusion head, whose residual is added to the codes with no φ.

Faithful to the official sampler, including docs/reference-behaviour.md Q2: the last scale's guidance (logits and diffusion) uses
the stale t = cfg·(K−2)/(K−1); and Q3: the diffusion head skips guidance when that t is exactly 1.0. Unlike
the official code (docs/reference-behaviour.md Q4), ``top_k`` is honoured: HART hard-codes 600 below stage 7 and 300 after, pass
``top_k=600`` to approximate it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange

from artok.sampling.forcing import Forced
from artok.sampling.logits import (GenerationOutput, autocast, check_filtering, filter_logits, gumbel_soft_assignment,
                                   resolve_dtype, sample_ids, shape_problems)


@dataclass
class HartGenerationOutput(GenerationOutput):
    """GenerationOutput plus residual (B, C, h, w), the diffusion head's output added to the last scale's
    codes, and diffusion_condition (nB·pn², D), the head's condition (cond rows, then null rows)."""

    residual: torch.Tensor | None = None
    diffusion_condition: torch.Tensor | None = field(default=None, repr=False)


def check_hart_compatible(model, tok) -> None:
    """Raise ValueError when a HART transformer and a tokenizer cannot work together."""
    cfg = model.config
    problems = []
    if not tok.is_hybrid:
        problems.append(f"the tokenizer is a {type(tok).__name__} with a '{tok.config.quantizer.kind}' quantizer; "
                        "HART needs a hybrid tokenizer (quantizer.kind 'hybrid')")
    problems += shape_problems(cfg, tok)
    if problems:
        raise ValueError("the tokenizer and the HART transformer disagree: " + "; ".join(problems))


def _same_length(a: tuple, b: tuple) -> tuple:
    """Two (context, mask, positions) batches right padded to the longer T (padding: zero states, mask False,
    the last position id repeated as cumsum(mask) − 1 gives it, which keeps the image tokens' RoPE offset)."""
    T = max(a[0].shape[1], b[0].shape[1])

    def pad(context, mask, positions):
        n = T - context.shape[1]
        if n == 0:
            return context, mask, positions
        return (torch.nn.functional.pad(context, (0, 0, 0, n)), torch.nn.functional.pad(mask, (0, n)),
                torch.cat([positions, positions[:, -1:].expand(-1, n)], dim=1))

    return (*pad(*a), *pad(*b))


@torch.no_grad()
def generate_hart(model, tok, condition, *, cfg_scale: float, context_mask: torch.Tensor | None = None,
                  context_position_ids: torch.Tensor | None = None, top_k: int = 0, top_p: float = 0.0,
                  generator: torch.Generator | None = None, temperature: float = 1.0,
                  diffusion_temperature: float = 1.0,
                  diffusion_noise: tuple[torch.Tensor, torch.Tensor] | None = None, more_smooth: bool = False,
                  dtype: torch.dtype | str | None = None, decode: bool = True,
                  return_logits: bool = False, forced: Forced | None = None,
                  null_condition: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
                  ) -> HartGenerationOutput:
    """Sample HART ids scale by scale with a KV cache, then the residual, and decode the hybrid latent.

    Args:
        model: a ``HartTransformer``; tok: a ``HybridTokenizer`` with the same codebook and scales.
        condition: class labels (B,) for a class-conditional model, or text-encoder states (B, T, Dc) with
            ``context_mask`` (B, T) bool (right padded) and ``context_position_ids`` (default cumsum − 1).
        cfg_scale: guidance; 0 switches it off (no unconditional pass). The null branch is the null class,
            or HART's zero context with position ids 0 and only the first slot valid.
        top_k, top_p: filtering of the discrete logits (``top_k=1`` is greedy); temperature divides them.
        diffusion_temperature: scales the diffusion head's per-step noise (HART: 1.0).
        diffusion_noise: (initial, per_step) noise for the head, see ``DiffusionHead.sample``.
        more_smooth: Gumbel soft codes in the latent (VAR's option, kept by HART); the diffusion condition
            still uses the sampled codes.
        forced: ids and residual to take from a reference instead of sampling (``Forced``; built by
            ``artok.sampling.edit``).
        null_condition: (context (B, T', Dc), mask (B, T'), position ids or None) of the guidance's null branch
            instead of HART's zero context: an encoded null or negative prompt (``TextEncoderConfig.null_prompt``);
            T' may differ from T (the shorter one is right padded).
    """
    check_hart_compatible(model, tok)
    check_filtering(top_k, top_p)
    if temperature <= 0 or diffusion_temperature < 0:
        raise ValueError(f"temperatures must be positive, got {temperature} and {diffusion_temperature}")
    dtype = resolve_dtype(dtype)
    cfg = model.config
    scales, K = cfg.scales, len(cfg.scales)
    device = model.head.weight.device
    mixed = autocast(device, dtype)

    # -- condition batch: cond rows, then null rows --------------------------------------------------------
    guided = cfg_scale != 0
    if cfg.class_conditional:
        labels = model.check_labels(condition)
        B = labels.shape[0]
        if guided:
            labels = torch.cat([labels, model.null_condition(B, device=device)[0]])
        cond = model.embed_condition(labels)
    else:
        context, mask, positions = model.check_context(condition.to(device), context_mask, context_position_ids)
        B, T = context.shape[:2]
        if guided:
            if null_condition is None:
                null_context, null_mask, null_positions = model.null_condition(B, context_tokens=T, device=device)
            else:
                null_context, null_mask, null_positions = model.check_context(null_condition[0].to(device),
                                                                              *null_condition[1:])
                if null_context.shape[0] != B:
                    raise ValueError(f"null_condition has batch {null_context.shape[0]}, the condition {B}")
                context, mask, positions, null_context, null_mask, null_positions = _same_length(
                    (context, mask, positions), (null_context, null_mask, null_positions))
            context = torch.cat([context, null_context.to(context.dtype)])
            mask = torch.cat([mask.to(device), null_mask])
            positions = torch.cat([positions.to(device), null_positions])
        cond = model.embed_condition(context, context_mask=mask, context_position_ids=positions)
    code_table = tok.indices_to_codes(torch.arange(tok.codebook_size, device=device)) if more_smooth else None
    forced = Forced.checked(forced, [pn * pn for pn in scales], B, tok.codebook_size)

    def guide(logits: torch.Tensor, t: float) -> torch.Tensor:
        return (1 + t) * logits[:B] - t * logits[B:] if guided else logits

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filtered = filter_logits(logits / temperature if temperature != 1.0 else logits, top_k=top_k, top_p=top_p)
        return filtered, sample_ids(filtered, generator=generator, greedy=top_k == 1)

    cache = model.new_cache()
    ids, all_logits, f_hat = [], [], None
    with mixed:
        logits, _ = model.start(cond, cache)
    for si in range(K - 1):  # discrete scales 0..K−2
        t = cfg_scale * si / (K - 1)
        logits = guide(logits.float(), t)
        if return_logits:
            all_logits.append(logits)
        filtered, block_ids = pick(logits)
        block_ids = forced.apply(si, block_ids)
        ids.append(block_ids)
        codes = gumbel_soft_assignment(filtered, si / (K - 1), generator=generator) @ code_table if more_smooth else None
        f_hat, nxt = tok.autoregressive_step(si, f_hat, block_ids, codes=codes)
        nxt = torch.cat([nxt, nxt]) if guided else nxt  # (nB, pn², C)
        with mixed:
            logits, hidden = model.step(si + 1, nxt, cond, cache)

    # -- last scale: every token in one pass, stale guidance (docs/reference-behaviour.md Q2), then the diffusion head ---
    t = cfg_scale * (K - 2) / (K - 1)
    logits = guide(logits.float(), t)
    if return_logits:
        all_logits.append(logits)
    filtered, last_ids = pick(logits)
    last_ids = forced.apply(K - 1, last_ids)
    ids.append(last_ids)
    sampled_codes = tok.indices_to_codes(last_ids)  # (B, l, C): the cond ids' codes for both halves
    with mixed:
        z = model.diffusion_condition(hidden, torch.cat([sampled_codes, sampled_codes]) if guided else sampled_codes)
    z = rearrange(z.float(), "b l d -> (b l) d")  # (nB·l, D), cond rows first
    head = model.diffusion_head
    residual = head.sample(z, cfg_scale=t, temperature=diffusion_temperature, noise=diffusion_noise,
                           guided=None if guided else False, generator=generator)[: B * last_ids.shape[1]]
    H = scales[-1]
    residual = forced.apply_residual(rearrange(residual, "(b h w) c -> b c h w", b=B, h=H, w=H))
    codes = gumbel_soft_assignment(filtered, (K - 2) / (K - 1), generator=generator) @ code_table if more_smooth else None
    f_hat, _ = tok.autoregressive_step(K - 1, f_hat, last_ids, codes=codes, residual=residual)
    images = None
    if decode:
        with mixed:
            images = tok.decode(f_hat).float().clamp(-1, 1)
    return HartGenerationOutput(ids=ids, latent=f_hat, images=images, logits=all_logits if return_logits else None,
                                residual=residual, diffusion_condition=z)
