"""Official VAR transformer checkpoints (``var_d16.pth`` … ``var_d30.pth``, shared-AdaLN d36) → ``Generator``.

Depth, width, heads, MLP ratio, AdaLN sharing, attention normalisation, class count, codebook size and
latent channels are read from the tensor shapes; the scale schedule must be given (the checkpoint only
fixes L = Σ pn² and the number of scales, which are checked against it). Loading is strict.

Key map (official → artok). The official buffers ``lvl_1L``, ``attn_bias_for_masking`` and
``blocks.i.attn.zero_k_bias`` are derived from the scales, so artok does not store them: they are checked
against the given scales and dropped.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from artok.config import GeneratorConfig
from artok.convert.common import KeyRenames, StateDict, count_indexed, load_state_dict, require
from artok.checkpoint import CheckpointError, load_strict

WHAT = "VAR transformer"

KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^pos_start$", "start_embed"),
    (r"^pos_1LC$", "pos_embed"),
    (r"^class_emb\.(.+)$", r"class_embed.\1"),
    (r"^lvl_embed\.(.+)$", r"level_embed.\1"),
    (r"^shared_ada_lin\.1\.(.+)$", r"shared_adaln.\1"),
    (r"^blocks\.(\d+)\.ada_lin\.1\.(.+)$", r"blocks.\1.adaln.\2"),
    (r"^blocks\.(\d+)\.ada_gss$", r"blocks.\1.adaln_bias"),
    (r"^blocks\.(\d+)\.attn\.mat_qkv\.(.+)$", r"blocks.\1.attn.qkv.\2"),
    (r"^blocks\.(\d+)\.attn\.scale_mul_1H11$", r"blocks.\1.attn.log_scale"),
    (r"^head_nm\.ada_lin\.1\.(.+)$", r"head_adaln.\1"),
)
DERIVED_BUFFERS = (r"^lvl_1L$", r"^attn_bias_for_masking$", r"^blocks\.\d+\.attn\.zero_k_bias$")
# the artok name of an official VAR key (unchanged when no rule applies: word_embed, attn.proj, ffn.*, q_bias,
# v_bias, head)
official_key_to_artok = KeyRenames(KEY_MAP, DERIVED_BUFFERS)


def var_transformer_config(sd: StateDict, *, scales, num_heads: int | None = None, class_dropout: float = 0.1,
                           drop_path: float | None = None, norm_eps: float = 1e-6) -> GeneratorConfig:
    """The ``GeneratorConfig`` of an official VAR state dict (shapes only, so ``meta`` tensors work)."""
    scales = tuple(int(s) for s in scales)
    word = require(sd, "word_embed.weight", WHAT)
    D, C = word.shape
    num_classes = require(sd, "class_emb.weight", WHAT).shape[0] - 1
    V = require(sd, "head.weight", WHAT).shape[0]
    depth = count_indexed(sd, r"^blocks\.(\d+)\.")
    if depth == 0:
        raise CheckpointError(f"not a {WHAT} checkpoint: no 'blocks.*' keys")
    hidden = require(sd, "blocks.0.ffn.fc1.weight", WHAT).shape[0]

    L = require(sd, "pos_1LC", WHAT).shape[1]
    K = require(sd, "lvl_embed.weight", WHAT).shape[0]
    first = require(sd, "pos_start", WHAT).shape[1]
    want_L = sum(s * s for s in scales)
    if L != want_L or K != len(scales) or first != scales[0] ** 2:
        raise CheckpointError(
            f"the checkpoint was trained on {K} scales with L = {L} tokens (first scale {first} tokens), but "
            f"scales={scales} give {len(scales)} scales and L = {want_L} (first {scales[0] ** 2}); pass the "
            f"checkpoint's schedule, e.g. (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) for 256 px or "
            f"(1, 2, 3, 4, 6, 9, 13, 18, 24, 32) for 512 px"
        )

    l2_norm = "blocks.0.attn.scale_mul_1H11" in sd
    if l2_norm:
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1]
        if num_heads is not None and num_heads != heads:
            raise CheckpointError(f"num_heads={num_heads} disagrees with the checkpoint's attention scale "
                                  f"(blocks.0.attn.scale_mul_1H11 has {heads} heads)")
    elif num_heads is None:
        raise CheckpointError("the checkpoint has no l2-norm attention scale (blocks.0.attn.scale_mul_1H11), so "
                              "the head count cannot be read from it: pass num_heads")
    else:
        heads = int(num_heads)
    if D % heads:
        raise CheckpointError(f"width {D} is not divisible by num_heads={heads}")
    return GeneratorConfig(
        num_classes=num_classes, codebook_size=V, latent_channels=C, scales=scales, block_unit="scale",
        depth=depth, embed_dim=D, num_heads=heads, mlp_ratio=hidden / D,
        shared_adaln="shared_ada_lin.1.weight" in sd, attention_l2_norm=l2_norm, norm_eps=norm_eps,
        class_dropout=class_dropout, drop_path=0.1 * depth / 24 if drop_path is None else drop_path,
    )


def _check_derived(sd: StateDict, config: GeneratorConfig) -> None:
    """The official buffers must equal what artok derives from the scales (skipped for ``meta`` tensors)."""
    levels = sd.get("lvl_1L")
    if levels is not None and not levels.is_meta:
        if tuple(levels.shape) != (1, config.num_tokens) or not torch.equal(levels[0].long().cpu(), _levels(config)):
            raise CheckpointError(f"lvl_1L (the scale of each position) does not match scales={config.scales}")
    bias = sd.get("attn_bias_for_masking")
    if bias is not None:
        L = config.num_tokens
        if tuple(bias.shape) != (1, 1, L, L):
            raise CheckpointError(f"attn_bias_for_masking has shape {tuple(bias.shape)}, expected (1, 1, {L}, {L})")
        if not bias.is_meta:
            levels = _levels(config)
            allowed = levels[:, None] >= levels[None, :]
            if not torch.equal(bias[0, 0].cpu() == 0, allowed):
                raise CheckpointError(f"attn_bias_for_masking is not the block-causal mask of scales={config.scales}")
    for key, value in sd.items():
        if key.endswith("attn.zero_k_bias") and not value.is_meta and bool(value.ne(0).any()):
            raise CheckpointError(f"{key} is not zero")


def _levels(config: GeneratorConfig) -> torch.Tensor:
    return torch.cat([torch.full((pn * pn,), k, dtype=torch.long) for k, pn in enumerate(config.scales)])


def var_keys_to_artok(sd: StateDict) -> dict[str, torch.Tensor]:
    """Rename an official VAR state dict to artok's keys, dropping the derived buffers."""
    return {official_key_to_artok(k): v for k, v in sd.items() if not official_key_to_artok.is_derived(k)}


def var_transformer(state_dict, *, scales, num_heads: int | None = None, class_dropout: float = 0.1,
                    drop_path: float | None = None, norm_eps: float = 1e-6):
    """Official VAR transformer → ``artok.models.Generator`` (eval mode).

    Args:
        state_dict: a mapping, or a path to ``.pth``/``.bin`` (read with ``weights_only=True``) or
            ``.safetensors``. A mapping of ``meta`` tensors builds the model on ``meta`` (shapes only).
        scales: the token-map sides the checkpoint was trained on, e.g. (1, 2, 3, 4, 5, 6, 8, 10, 13, 16).
        num_heads: read from the l2-norm attention scale when present (all released checkpoints); required
            otherwise.
        class_dropout, drop_path, norm_eps: training-time settings, official defaults (drop_path
            0.1·depth/24).
    """
    from artok.models import Generator

    sd = load_state_dict(state_dict)
    config = var_transformer_config(sd, scales=scales, num_heads=num_heads, class_dropout=class_dropout,
                                    drop_path=drop_path, norm_eps=norm_eps)
    _check_derived(sd, config)
    meta = any(v.is_meta for v in sd.values())
    with torch.device("meta") if meta else nullcontext():
        model = Generator(config)
    source = str(state_dict) if isinstance(state_dict, (str, Path)) else "state dict"
    load_strict(model, var_keys_to_artok(sd), source=source)
    return model.eval()
