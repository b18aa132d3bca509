"""Official VAR VQVAE checkpoints (``vae_ch160v4096z32.pth`` and kin) → artok tokenizers.

Hyper-parameters that the tensors determine (V, C, ch, ch_mult, residual blocks, attention placement, φ
count, quant_conv kernel) are inferred; the rest (``quant_resi``, ``beta``, dropout) are keyword arguments
with the official defaults. Loading is strict: a missing, unexpected or mis-shaped key raises with its name.
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path

import torch

from artok.config import ConvEncoderConfig, QuantizerConfig, TokenizerConfig
from artok.convert.common import StateDict, count_indexed, load_state_dict, require
from artok.checkpoint import CheckpointError, load_strict

_PHI_PATTERNS = (
    (re.compile(r"^quant_resi\.qresi_ls\.(\d+)\.(.+)$"), "phi.convs.{0}.{1}"),  # PhiPartiallyShared
    (re.compile(r"^quant_resi\.qresi\.(.+)$"), "phi.convs.0.{0}"),  # PhiShared
    (re.compile(r"^quant_resi\.(\d+)\.(.+)$"), "phi.convs.{0}.{1}"),  # PhiNonShared
)


def _phi_count(q: StateDict) -> int:
    """Number of φ convolutions in a VectorQuantizer2 state dict (0 when φ is the identity)."""
    for pattern in (r"^quant_resi\.qresi_ls\.(\d+)\.weight$", r"^quant_resi\.(\d+)\.weight$"):
        n = count_indexed(q, pattern)
        if n:
            return n
    return 1 if "quant_resi.qresi.weight" in q else 0


def quantizer_keys_to_artok(q: StateDict, num_scales: int, codebook_size: int) -> dict[str, torch.Tensor]:
    """VectorQuantizer2 keys (without ``quantize.``) → artok quantizer keys (without ``quantizer.``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in q.items():
        if key == "embedding.weight":
            out["codebook.embedding.weight"] = value
        elif key == "ema_vocab_hit_SV":
            # the official loader silently replaces this statistic when the number of scales differs
            if tuple(value.shape) == (num_scales, codebook_size):
                out["codebook.usage"] = value.float()
        else:
            for rx, template in _PHI_PATTERNS:
                m = rx.match(key)
                if m:
                    out[template.format(*m.groups())] = value
                    break
            else:
                out[key] = value  # unknown: left as is, so the strict load names it
    return out


def _infer_encoder(sd: StateDict) -> ConvEncoderConfig:
    conv_in = require(sd, "encoder.conv_in.weight", "VAR VQVAE")
    ch = conv_in.shape[0]
    levels = count_indexed(sd, r"^encoder\.down\.(\d+)\.")
    if levels == 0:
        raise CheckpointError("not a VAR VQVAE checkpoint: no 'encoder.down.*' keys")
    ch_mult = tuple(require(sd, f"encoder.down.{i}.block.0.conv1.weight", "VAR VQVAE").shape[0] // ch
                    for i in range(levels))
    num_res_blocks = count_indexed(sd, r"^encoder\.down\.0\.block\.(\d+)\.")
    dec_blocks = count_indexed(sd, r"^decoder\.up\.0\.block\.(\d+)\.")
    if dec_blocks != num_res_blocks + 1:
        raise CheckpointError(f"decoder has {dec_blocks} blocks per level, expected {num_res_blocks + 1} "
                              f"(encoder has {num_res_blocks})")
    attn_levels = tuple(i for i in range(levels) if f"encoder.down.{i}.attn.0.qkv.weight" in sd)
    return ConvEncoderConfig(
        ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
        attn_levels=None if attn_levels == (levels - 1,) else attn_levels,
        mid_attn="encoder.mid.attn_1.qkv.weight" in sd,
    )


def tokenizer_config_from_var_keys(sd: StateDict, *, scales, kind: str = "msrq", quant_resi: float = 0.5,
                                   beta: float = 0.25, dropout: float = 0.0, using_znorm: bool = False
                                   ) -> TokenizerConfig:
    """The artok config of a VAR-layout (``encoder``/``quantize``/``decoder``) state dict."""
    emb = require(sd, "quantize.embedding.weight", "VAR VQVAE")
    V, C = emb.shape
    encoder = _infer_encoder(sd).replace(dropout=dropout)
    q = {k[len("quantize."):]: v for k, v in sd.items() if k.startswith("quantize.")}
    phi = _phi_count(q)
    if phi == 0 and abs(quant_resi) > 1e-6:
        raise CheckpointError(f"the checkpoint has no φ convolutions (quant_resi.*), so φ is the identity: "
                              f"pass quant_resi=0 (got {quant_resi})")
    scales = tuple(int(s) for s in scales)
    return TokenizerConfig(
        image_size=scales[-1] * encoder.downsample_factor, latent_channels=C, encoder=encoder,
        quantizer=QuantizerConfig(kind=kind, codebook_size=V, scales=scales, beta=beta, l2_norm=using_znorm,
                                  quant_resi=quant_resi, share_quant_resi=max(phi, 1)),
        quant_conv_kernel_size=require(sd, "quant_conv.weight", "VAR VQVAE").shape[-1],
    )


def var_keys_to_artok(sd: StateDict, config: TokenizerConfig) -> dict[str, torch.Tensor]:
    """Rename a VAR-layout VQVAE state dict to artok's tokenizer keys."""
    q = {k[len("quantize."):]: v for k, v in sd.items() if k.startswith("quantize.")}
    out = {k: v for k, v in sd.items() if not k.startswith("quantize.")}
    mapped = quantizer_keys_to_artok(q, len(config.quantizer.scales), config.quantizer.codebook_size)
    out.update({f"quantizer.{k}": v for k, v in mapped.items()})
    return out


def on_meta(sd: StateDict) -> bool:
    """True for a state dict of ``meta`` tensors (shapes only): the model is then built on ``meta`` too."""
    return any(v.is_meta for v in sd.values())


def build_on(sd: StateDict):
    """Context in which to construct the module that will receive ``sd``."""
    return torch.device("meta") if on_meta(sd) else nullcontext()


def load_with_fills(module: torch.nn.Module, sd: dict[str, torch.Tensor], *, source: str) -> None:
    """Strict load, where artok-only training statistics absent from official checkpoints keep their
    fresh values (usage counters); every other key must match exactly."""
    own = module.state_dict()
    for key, value in own.items():
        if key not in sd and key.endswith(("codebook.usage", "codebook.num_updates")):
            sd[key] = value
    load_strict(module, sd, source=source, assign=on_meta(sd))


def _source_name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "state dict"


def var_vqvae(state_dict, *, scales, quant_resi: float = 0.5, beta: float = 0.25, dropout: float = 0.0,
              using_znorm: bool = False):
    """Official VAR VQVAE → ``artok.tokenizers.Tokenizer`` (eval mode).

    Args:
        state_dict: a mapping, or a path to ``.pth``/``.bin`` (read with ``weights_only=True``) or
            ``.safetensors``.
        scales: the token-map sides, e.g. ``(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)`` for 256 px.
    """
    from artok.tokenizers import Tokenizer

    sd = load_state_dict(state_dict)
    config = tokenizer_config_from_var_keys(sd, scales=scales, quant_resi=quant_resi, beta=beta, dropout=dropout,
                                            using_znorm=using_znorm)
    with build_on(sd):
        model = Tokenizer(config)
    load_with_fills(model, var_keys_to_artok(sd, config), source=_source_name(state_dict))
    return model.eval()


def var_quantizer(state_dict, *, scales, quant_resi: float = 0.5, beta: float = 0.25, using_znorm: bool = False):
    """Official ``VectorQuantizer2`` alone → ``MultiScaleResidualQuantizer`` (eval mode)."""
    from artok.quantizers import MultiScaleResidualQuantizer

    sd = load_state_dict(state_dict, prefix="quantize.")
    V, C = require(sd, "embedding.weight", "VAR VectorQuantizer2").shape
    phi = _phi_count(sd)
    if phi == 0 and abs(quant_resi) > 1e-6:
        raise CheckpointError("the checkpoint has no φ convolutions: pass quant_resi=0")
    scales = tuple(int(s) for s in scales)
    with build_on(sd):
        model = MultiScaleResidualQuantizer(codebook_size=V, dim=C, scales=scales, beta=beta, quant_resi=quant_resi,
                                            share_quant_resi=max(phi, 1), l2_norm=using_znorm)
    load_with_fills(model, quantizer_keys_to_artok(sd, len(scales), V), source=_source_name(state_dict))
    return model.eval()
