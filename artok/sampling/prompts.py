"""Text-to-image sampling: prompts → the text encoder's context → ``generate_hart``.

The guidance's null branch is what the pipeline's text-encoder record says (``TextEncoderConfig.null_prompt``):
HART's zero context when it is null, else the encoded null (or negative) prompt.
"""
from __future__ import annotations

import torch

from artok.models.text_encoder import TextContext
from artok.sampling.hart import HartGenerationOutput, generate_hart


def check_text_encoder(model, encoder) -> None:
    """Raise ValueError when a text encoder's contexts do not fit a context-conditioned model."""
    cfg = model.config
    if getattr(cfg, "context_dim", 0) <= 0:
        raise ValueError(f"the generator is class-conditional ({getattr(cfg, 'num_classes', '?')} classes); prompts "
                         "need a text-conditioned HART pipeline (generator context_dim > 0)")
    problems = []
    if encoder.context_dim != cfg.context_dim:
        problems.append(f"the encoder's states are {encoder.context_dim}-d, the generator takes {cfg.context_dim}-d")
    if encoder.max_length > cfg.max_context_tokens:
        problems.append(f"the encoder pads prompts to {encoder.max_length} tokens, the generator takes at most "
                        f"{cfg.max_context_tokens}")
    if problems:
        raise ValueError("the text encoder and the generator disagree: " + "; ".join(problems))


def prompt_condition(encoder, prompts: list[str]) -> dict:
    """``generate_hart``'s condition keyword arguments for ``prompts``: ``labels`` (the context (B, T, D)),
    ``context_mask``, ``context_position_ids`` and ``null_condition`` (None: HART's zero context)."""
    text: TextContext = encoder(list(prompts))
    null = encoder.null_context(len(prompts))
    return {"labels": text.context, "context_mask": text.mask, "context_position_ids": text.position_ids,
            "null_condition": None if null is None else (null.context, null.mask, null.position_ids)}


@torch.no_grad()
def generate_from_prompts(model, tok, encoder, prompts: list[str], *, cfg_scale: float,
                          **options) -> HartGenerationOutput:
    """Sample one image per prompt from a text-conditioned HART (``options``: ``generate_hart``'s: top_k,
    top_p, generator, temperature, more_smooth, dtype, ...)."""
    check_text_encoder(model, encoder)
    condition = prompt_condition(encoder, prompts)
    return generate_hart(model, tok, condition.pop("labels"), cfg_scale=cfg_scale, **condition, **options)
