"""Sampling: the VAR and HART loops, the one logits filter, and writing samples to disk.

``generate(model, tok, labels, cfg_scale=...)`` picks the loop of the model's type (``model_type``) from
``GENERATORS``: ``artok.sampling.var`` for a ``Generator`` (next-scale or raster order), ``artok.sampling.hart``
for a ``HartTransformer``. ``artok.sampling.logits`` holds what both loops share (filtering, guidance,
sampling of ids); ``artok.sampling.to_disk`` writes PNGs, grids and ``.npz`` files.
"""
from __future__ import annotations

from typing import Callable

import torch

from artok.models.hart import HartTransformer
from artok.models.transformer import Generator
from artok.sampling.acceleration import Acceleration
from artok.sampling.edit import edit_forcing
from artok.sampling.forcing import Forced
from artok.sampling.hart import HartGenerationOutput, check_hart_compatible, generate_hart
from artok.sampling.prompts import check_text_encoder, generate_from_prompts, prompt_condition
from artok.sampling.logits import (CFG_SCHEDULES, DTYPES, GenerationOutput, filter_logits, guidance_strength,
                                   gumbel_soft_assignment, resolve_dtype, sample_ids)
from artok.sampling.var import check_compatible, generate_var

__all__ = ["Acceleration", "CFG_SCHEDULES", "DTYPES", "Forced", "GENERATORS", "GenerationOutput", "HartGenerationOutput",
           "check_compatible", "check_hart_compatible", "check_text_encoder", "edit", "filter_logits", "generate",
           "generate_from_prompts", "generate_hart",
           "generate_var", "guidance_strength", "gumbel_soft_assignment", "prompt_condition", "resolve_dtype",
           "sample_ids"]


def _var(model, tok, labels, *, hart_options: dict, **options) -> GenerationOutput:
    if hart_options:
        raise TypeError(f"generate() got options only HART models take: {', '.join(sorted(hart_options))}")
    return generate_var(model, tok, labels, **options)


def _hart(model, tok, labels, *, cfg_schedule: str, hart_options: dict, acceleration=None,
          **options) -> HartGenerationOutput:
    if acceleration is not None:
        raise ValueError("training-free acceleration (Acceleration) is implemented for VAR generators, not HART")
    if cfg_schedule != "linear":
        raise ValueError(f"HART guides with its own linear schedule; cfg_schedule '{cfg_schedule}' does not apply")
    return generate_hart(model, tok, labels, **options, **hart_options)


# model_type → the loop that samples it (called with generate()'s keyword arguments)
GENERATORS: dict[str, Callable[..., GenerationOutput]] = {
    Generator.model_type: _var,
    HartTransformer.model_type: _hart,
}


@torch.no_grad()
def generate(model, tok, labels, *, cfg_scale: float, top_k: int = 0, top_p: float = 0.0,
             generator: torch.Generator | None = None, temperature: float = 1.0, cfg_schedule: str = "linear",
             more_smooth: bool = False, dtype: torch.dtype | str | None = None, decode: bool = True,
             return_logits: bool = False, prefix: list[torch.Tensor] | None = None, forced: Forced | None = None,
             acceleration: Acceleration | None = None, **hart_options) -> GenerationOutput:
    """Sample token ids block by block with a KV cache and decode them, with the loop of the model's type.

    A ``Generator`` (and any model without a ``model_type``) goes to ``artok.sampling.var.generate_var``; a
    HART model (``artok.models.HartTransformer``) to ``artok.sampling.hart.generate_hart``: the discrete
    scales as in VAR, then the residual diffusion head; ``labels`` are then class ids or text-encoder states
    (B, T, D), and ``hart_options`` takes ``context_mask``, ``context_position_ids``,
    ``diffusion_temperature`` and ``diffusion_noise``.

    Args:
        model: a ``Generator`` or ``HartTransformer``; tok: the tokenizer whose ids it models (checked with
            ``check_compatible`` or ``check_hart_compatible``).
        labels: (B,) class ids in [0, num_classes]; num_classes is the null (unconditional) class.
        cfg_scale: guidance strength; 0 switches guidance off (no unconditional pass).
        top_k, top_p: filtering (0 disables); ``top_k=1`` is greedy and deterministic.
        generator: a ``torch.Generator`` for reproducible sampling (its device may differ from the model's).
        temperature: divides the guided logits before filtering.
        cfg_schedule: ``linear`` (VAR's ramp over blocks) or ``constant`` (VAR only).
        more_smooth: VAR's Gumbel soft codes for the next input and the latent (ids are still sampled).
        dtype: float32, bfloat16 or float16; the transformer and decoder run under autocast in that dtype;
            guidance and sampling are always float32.
        prefix: ids of the first blocks, taken instead of sampled; forced: a ``Forced`` (per-token forcing,
            what ``edit`` uses).
        acceleration: training-free speed-ups for VAR generators (``Acceleration``: guidance off at the last
            blocks, token merging, a draft model); None is the exact sampler.
    """
    kind = getattr(model, "model_type", Generator.model_type)  # duck-typed generators sample as VAR
    if kind not in GENERATORS:
        raise TypeError(f"generate() samples {' and '.join(sorted(GENERATORS))} models, not a "
                        f"{type(model).__name__} (model_type '{kind}')")
    if prefix is not None:
        if forced is not None:
            raise ValueError("give prefix or forced, not both")
        forced = Forced.prefix(prefix)
    return GENERATORS[kind](model, tok, labels, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p, generator=generator,
                            temperature=temperature, cfg_schedule=cfg_schedule, more_smooth=more_smooth, dtype=dtype,
                            decode=decode, return_logits=return_logits, forced=forced,
                            hart_options=hart_options, acceleration=acceleration)


def edit(model, tok, images: torch.Tensor, mask: torch.Tensor, labels, *, cfg_scale: float, **options) -> GenerationOutput:
    """Zero-shot in-/out-painting and class-conditional edits: the white (1) pixels of ``mask`` are generated
    under ``labels``, the black (0) ones kept from ``images`` (B, 3, H, W) in [-1, 1], teacher-forced at every
    scale (``artok.sampling.edit``'s module says which tokens). ``mask``: (H, W), (B, H, W) or (B, 1, H, W),
    binary. ``options`` are ``generate``'s (top_k, top_p, generator, ...). An all-black mask returns the
    input's ids; an all-white one is ordinary sampling with the same seed."""
    return generate(model, tok, labels, cfg_scale=cfg_scale, forced=edit_forcing(tok, images, mask), **options)
