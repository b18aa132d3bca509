"""Official HART checkpoints (``mit-han-lab/hart-0.7b-1024px``) → artok modules.

- ``hart_tokenizer``: the ``tokenizer/`` folder (``HARTAutoEncoderWithDisc``): ``vae.*`` keys in VAR's layout
  (the prefix is optional; ``disc.*`` discriminator keys are dropped) → ``HybridTokenizer``.
- ``hart_diffusion_head``: ``diffloss.*`` (or bare ``net.*``) keys → ``DiffusionHead``.
- ``hart_transformer``: the ``llm/`` folder (``HARTForT2I``, diffusion MLP inside) → ``HartTransformer``.
- ``hart_pipeline``: both folders, each with its ``config.json`` deciding the architecture, plus the record of
  the text encoder the release was trained with (``text_encoder.json``).

Hyper-parameters the tensors determine are inferred; the rest are keyword arguments with the official
defaults. The official buffers ``lvl_1L``, ``attn_bias_for_masking`` and ``blocks.i.attn.zero_k_bias`` are
derived from the scales and the context length, so they are checked and dropped. Loading is strict.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from artok.config import DiffusionHeadConfig, HartConfig, hart_text_encoder
from artok.convert.common import KeyRenames, StateDict, count_indexed, load_state_dict, require
from artok.convert.var import build_on, load_with_fills, tokenizer_config_from_var_keys, var_keys_to_artok
from artok.checkpoint import CheckpointError, load_strict

TRANSFORMER = "HART transformer"

# official HARTForT2I key → artok HartTransformer key (unchanged when no rule applies: word_embed,
# context_embed, context_norm, head, decoder_norm, attn.q_bias/v_bias/proj, ffn.*_proj)
KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^lvl_embed\.(.+)$", r"level_embed.\1"),
    (r"^blocks\.(\d+)\.attn\.qkv_proj\.(.+)$", r"blocks.\1.attn.qkv.\2"),
    (r"^blocks\.(\d+)\.attn\.scale_mul_1H11$", r"blocks.\1.attn.log_scale"),
    (r"^blocks\.(\d+)\.ln_wo_grad\.(.+)$", r"blocks.\1.norm.\2"),
    (r"^blocks\.(\d+)\.ada_lin\.1\.(.+)$", r"blocks.\1.adaln.\2"),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.adaln_table"),
    (r"^head_nm\.ln_wo_grad\.(.+)$", r"head_norm.\1"),
    (r"^head_nm\.ada_lin\.1\.(.+)$", r"head_adaln.\1"),
    (r"^diffloss\.net\.(.+)$", r"diffusion_head.net.\1"),
)
DERIVED_BUFFERS = (r"^lvl_1L$", r"^attn_bias_for_masking$", r"^blocks\.\d+\.attn\.zero_k_bias$")
official_key_to_artok = KeyRenames(KEY_MAP, DERIVED_BUFFERS)  # the artok name of an official HARTForT2I key
POOLING = {"max": "max", "avg": "mean"}  # HART's sep_aln_pooling_mode → HartConfig.adaln_pooling
WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin", "ema_model.bin",
                "model.bin")


def _source_name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "state dict"


# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------

def hart_tokenizer(state_dict, *, scales, quant_resi: float = 0.5, beta: float = 0.25, using_znorm: bool = False,
                   skip_continuous_prob: float = 0.5):
    """HART's hybrid tokenizer (``vae.*`` keys, with or without the prefix; ``disc.*`` ignored) →
    ``HybridTokenizer`` (eval mode). ``ch_mult``, V, C, ch and the φ count are inferred from the tensors.

    Args:
        scales: the token-map sides; the 1024 px release uses (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64).
    """
    from artok.tokenizers.hybrid import HybridTokenizer

    sd = load_state_dict(state_dict, prefix="vae.")
    sd = {k: v for k, v in sd.items() if not k.startswith("disc.")}
    config = tokenizer_config_from_var_keys(sd, scales=scales, kind="hybrid", quant_resi=quant_resi, beta=beta,
                                            using_znorm=using_znorm)
    config = config.replace(quantizer=config.quantizer.replace(skip_continuous_prob=skip_continuous_prob))
    with build_on(sd):
        model = HybridTokenizer(config)
    load_with_fills(model, var_keys_to_artok(sd, config), source=_source_name(state_dict))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Diffusion head
# ---------------------------------------------------------------------------------------------------------

def diffusion_head_config(sd: StateDict, *, num_sampling_steps: int = 8, latent_scale: float = 0.6,
                          num_train_timesteps: int = 1000) -> DiffusionHeadConfig:
    """The ``DiffusionHeadConfig`` of ``net.*`` keys (shapes only)."""
    what = "HART diffusion head"
    width, channels = require(sd, "net.input_proj.weight", what).shape
    condition_dim = require(sd, "net.cond_embed.weight", what).shape[1]
    depth = count_indexed(sd, r"^net\.res_blocks\.(\d+)\.")
    freq = require(sd, "net.time_embed.mlp.0.weight", what).shape[1]
    if freq != 256:
        raise CheckpointError(f"the time embedding takes {freq} frequencies; HART's takes 256")
    return DiffusionHeadConfig(latent_channels=channels, condition_dim=condition_dim, width=width, depth=depth,
                               num_train_timesteps=num_train_timesteps, num_sampling_steps=num_sampling_steps,
                               latent_scale=latent_scale)


def hart_diffusion_head(state_dict, *, num_sampling_steps: int = 8, latent_scale: float = 0.6):
    """HART's ``DiffLoss`` (``diffloss.net.*`` keys as in the ``llm/`` checkpoint, or bare ``net.*``) →
    ``DiffusionHead`` (eval mode). Width, depth and channels are inferred."""
    from artok.models.diffusion_head import DiffusionHead

    sd = load_state_dict(state_dict, prefix="diffloss.")
    sd = {k: v for k, v in sd.items() if k.startswith("net.")}
    config = diffusion_head_config(sd, num_sampling_steps=num_sampling_steps, latent_scale=latent_scale)
    with build_on(sd):
        model = DiffusionHead(config)
    load_strict(model, sd, source=_source_name(state_dict), assign=any(v.is_meta for v in sd.values()))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------------------

def hart_transformer_config(sd: StateDict, *, scales, num_heads: int | None = None, adaln_pooling: str = "max",
                            class_dropout: float = 0.1, norm_eps: float = 1e-6, num_sampling_steps: int = 8,
                            diffusion_batch_mul: int = 4, max_context_tokens: int | None = None) -> HartConfig:
    """The ``HartConfig`` of an official ``HARTForT2I`` state dict (shapes only, so ``meta`` tensors work).

    Inferred: depth, width, codebook size, latent channels, context width, SwiGLU width, AdaLN variant
    (``ada_lin`` → pooled, ``scale_shift_table`` → shared table, neither → none), cosine attention
    (``scale_mul_1H11``, which also gives the head count), context norm, the context length T (from
    ``lvl_1L``) and the diffusion head. Without ``scale_mul_1H11`` the head count must be given or is
    embed_dim / 64 (the head size of every VAR/HART release).
    """
    scales = tuple(int(s) for s in scales)
    D, C = require(sd, "word_embed.weight", TRANSFORMER).shape
    context_dim = require(sd, "context_embed.weight", TRANSFORMER).shape[1]
    V = require(sd, "head.weight", TRANSFORMER).shape[0]
    depth = count_indexed(sd, r"^blocks\.(\d+)\.")
    if depth == 0:
        raise CheckpointError(f"not a {TRANSFORMER} checkpoint: no 'blocks.*' keys")
    if "blocks.0.attn.mat_qkv.weight" in sd or "blocks.0.ffn.fc1.weight" in sd:
        raise CheckpointError("this checkpoint has HART's 'gpt2' blocks (LayerNorm, GELU MLP, absolute positions); "
                              "artok implements the released Llama blocks (attn_type='llama', mlp_type='llama')")
    K = require(sd, "lvl_embed.weight", TRANSFORMER).shape[0]
    L = sum(s * s for s in scales)
    if K != len(scales):
        raise CheckpointError(f"the checkpoint was trained on {K} scales, but scales={scales} has {len(scales)}; "
                              "pass its schedule, e.g. (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64) for 1024 px")
    if "lvl_1L" in sd:
        T = sd["lvl_1L"].shape[-1] - L + 1
        if T < 1 or (max_context_tokens is not None and max_context_tokens != T):
            raise CheckpointError(f"lvl_1L has {sd['lvl_1L'].shape[-1]} positions, which does not fit L = {L} "
                                  f"tokens of scales {scales} plus {max_context_tokens or 'some'} context tokens")
    else:
        T = max_context_tokens if max_context_tokens is not None else 300
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    if l2:
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1]
        if num_heads is not None and num_heads != heads:
            raise CheckpointError(f"num_heads={num_heads} given, but scale_mul_1H11 has {heads} heads")
    else:
        heads = num_heads if num_heads is not None else D // 64
    if "blocks.0.ada_lin.1.weight" in sd:
        adaln = "pooled"
    elif "blocks.0.scale_shift_table" in sd:
        adaln = "shared_table"
    else:
        adaln = "none"
    hidden = require(sd, "blocks.0.ffn.gate_proj.weight", TRANSFORMER).shape[0]
    mlp_ratio = 4.0
    if int((D * mlp_ratio * 2) / 3 + 255) // 256 * 256 != hidden:
        mlp_ratio = hidden * 3 / (2 * D)
    diff = {k[len("diffloss."):]: v for k, v in sd.items() if k.startswith("diffloss.")}
    head_cfg = diffusion_head_config(diff, num_sampling_steps=num_sampling_steps)
    return HartConfig(
        codebook_size=V, latent_channels=C, scales=scales, depth=depth, embed_dim=D, num_heads=heads,
        mlp_ratio=mlp_ratio, norm_eps=norm_eps, context_dim=context_dim, max_context_tokens=T,
        context_norm="context_norm.weight" in sd, num_classes=0, adaln=adaln, adaln_pooling=adaln_pooling,
        attention_l2_norm=l2, class_dropout=class_dropout, diffusion_batch_mul=diffusion_batch_mul,
        diffusion_head=head_cfg,
    )


def hart_keys_to_artok(sd: StateDict, config: HartConfig) -> dict[str, torch.Tensor]:
    """Rename an official ``HARTForT2I`` state dict to artok keys, checking and dropping the derived
    buffers (``lvl_1L`` must hold the levels of ``config.scales`` after T context zeros)."""
    out = {}
    for key, value in sd.items():
        if official_key_to_artok.is_derived(key):
            if key == "lvl_1L" and not value.is_meta:
                T, K = config.max_context_tokens, len(config.scales)
                want = torch.cat([torch.zeros(T, dtype=torch.long)] +
                                 [torch.full((config.scales[k] ** 2,), k, dtype=torch.long) for k in range(1, K)])
                if not torch.equal(value.reshape(-1).long().cpu(), want):
                    raise CheckpointError(f"lvl_1L does not hold the levels of scales {config.scales} after "
                                          f"{T} context tokens")
            continue
        out[official_key_to_artok(key)] = value
    return out


def hart_transformer(state_dict, *, scales, num_heads: int | None = None, adaln_pooling: str = "max",
                     class_dropout: float = 0.1, norm_eps: float = 1e-6, num_sampling_steps: int = 8,
                     diffusion_batch_mul: int = 4):
    """Official ``HARTForT2I`` (the ``llm/`` folder, with ``diffloss.*`` inside) → ``HartTransformer``
    (eval mode). See ``hart_transformer_config`` for what is inferred.

    Args:
        scales: the checkpoint's schedule; the 1024 px release uses (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36,
            48, 64).
        num_heads: needed only without cosine attention (no ``scale_mul_1H11``); default embed_dim / 64.
        adaln_pooling: HART's ``sep_aln_pooling_mode`` ("max" as released, or "mean").
    """
    from artok.models.hart import HartTransformer

    sd = load_state_dict(state_dict)
    config = hart_transformer_config(sd, scales=scales, num_heads=num_heads, adaln_pooling=adaln_pooling,
                                     class_dropout=class_dropout, norm_eps=norm_eps,
                                     num_sampling_steps=num_sampling_steps, diffusion_batch_mul=diffusion_batch_mul)
    mapped = hart_keys_to_artok(sd, config)
    with build_on(sd):
        model = HartTransformer(config)
    load_strict(model, mapped, source=_source_name(state_dict), assign=any(v.is_meta for v in sd.values()))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Released folders: config.json next to the weights decides the architecture
# ---------------------------------------------------------------------------------------------------------

def _read_folder(directory: str | Path, what: str) -> tuple[dict, Path]:
    """(config.json as a dict, the weights file) of a released HART folder."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise CheckpointError(f"{what} folder {d} does not exist (or is not a directory)")
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{d} has no config.json: the released HART {what} folder keeps its architecture "
                              f"there, next to the weights (download the whole folder)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from None
    for name in WEIGHT_FILES:
        if (d / name).exists():
            return config, d / name
    raise CheckpointError(f"{d} has a config.json but no weights: expected one of {', '.join(WEIGHT_FILES)}")


def _check_value(config: dict, key: str, allowed, source: Path, why: str) -> None:
    if key in config and config[key] not in allowed:
        raise CheckpointError(f"{source}: {key}={config[key]!r} is not supported by artok's HART ({why}); "
                              f"expected one of {sorted(map(repr, allowed))}")


def hart_tokenizer_from_folder(directory: str | Path):
    """A released ``tokenizer/`` folder (``HARTAutoEncoderWithDisc``: config.json + weights) →
    ``HybridTokenizer``; the scale schedule and φ settings come from config.json."""
    config, weights = _read_folder(directory, "tokenizer")
    source = Path(directory) / "config.json"
    if "v_patch_nums" not in config:
        raise CheckpointError(f"{source} has no 'v_patch_nums' (the scale schedule)")
    _check_value(config, "quantizer_type", {"var_hybrid"}, source, "artok converts HART's hybrid quantizer")
    if config.get("disable_quant_resi"):
        raise CheckpointError(f"{source}: disable_quant_resi=true is not a released HART tokenizer "
                              "(the release refines every scale with φ)")
    tok = hart_tokenizer(weights, scales=config["v_patch_nums"], quant_resi=config.get("quant_resi", 0.5),
                         beta=config.get("beta", 0.25), using_znorm=config.get("using_znorm", False))
    for key, value in (("vocab_size", tok.codebook_size), ("z_channels", tok.latent_channels),
                       ("ch", tok.config.encoder.ch)):
        if key in config and config[key] != value:
            raise CheckpointError(f"{source} says {key}={config[key]} but the weights have {value}")
    if "ch_mult" in config and tuple(config["ch_mult"]) != tuple(tok.config.encoder.ch_mult):
        raise CheckpointError(f"{source} says ch_mult={tuple(config['ch_mult'])} but the weights have "
                              f"{tuple(tok.config.encoder.ch_mult)}")
    return tok


def hart_transformer_from_folder(directory: str | Path):
    """A released ``llm/`` folder (``HARTForT2I``: config.json + weights, ``ema_model.bin`` preferred as
    ``sample.py`` loads it) → ``HartTransformer``; config.json decides scales, heads, pooling and the
    AdaLN variant, which must agree with the tensors."""
    d = Path(directory).expanduser()
    config, weights = _read_folder(d, "transformer")
    if (d / "ema_model.bin").exists():
        weights = d / "ema_model.bin"
    source = d / "config.json"
    if "patch_nums" not in config:
        raise CheckpointError(f"{source} has no 'patch_nums' (the scale schedule)")
    _check_value(config, "attn_type", {"llama"}, source, "the release uses Llama blocks")
    _check_value(config, "mlp_type", {"llama"}, source, "the release uses SwiGLU MLPs")
    _check_value(config, "use_timestep_embed", {False}, source, "the release conditions scales by level embeddings")
    _check_value(config, "use_cross_attn", {False}, source, "the release conditions by context tokens in the sequence")
    _check_value(config, "sampler", {"iddpm"}, source, "the residual head samples with IDDPM")
    _check_value(config, "diffusion_head_repeats", {1}, source, "one diffusion head pass per token")
    if config.get("disable_aln", False) is False and config.get("shared_aln", False):
        raise CheckpointError(f"{source}: shared_aln=true with disable_aln=false is not a HART variant artok knows")
    _check_value(config, "sep_aln_pooling_mode", set(POOLING), source, "HART pools the context by max or mean")
    model = hart_transformer(weights, scales=config["patch_nums"], num_heads=config.get("num_heads"),
                             adaln_pooling=POOLING[config.get("sep_aln_pooling_mode", "max")],
                             class_dropout=config.get("cond_drop_rate", 0.1), norm_eps=config.get("norm_eps", 1e-6),
                             num_sampling_steps=int(config.get("num_sampling_steps", 8)),
                             diffusion_batch_mul=config.get("diffusion_batch_mul", 4))
    c = model.config
    want_adaln = "pooled" if not config.get("disable_aln", False) else (
        "shared_table" if config.get("shared_aln", False) else "none")
    checks = {"depth": c.depth, "embed_dim": c.embed_dim, "context_dim": c.context_dim,
              "context_token": c.max_context_tokens, "attn_l2_norm": c.attention_l2_norm,
              "use_context_norm": c.context_norm, "diff_width": c.diffusion_head.width,
              "diff_depth": c.diffusion_head.depth}
    for key, value in checks.items():
        if key in config and config[key] != value:
            raise CheckpointError(f"{source} says {key}={config[key]} but the weights have {value}")
    if ("disable_aln" in config or "shared_aln" in config) and want_adaln != c.adaln:
        raise CheckpointError(f"{source} describes AdaLN '{want_adaln}' but the weights hold '{c.adaln}'")
    return model


def hart_pipeline(tokenizer_dir: str | Path, llm_dir: str | Path, *, text_encoder: str | None = None):
    """The released ``hart-0.7b-1024px`` layout (``tokenizer/`` and ``llm/`` folders) → ``artok.Pipeline``
    with ``.tokenizer`` (HybridTokenizer) and ``.generator`` (HartTransformer), checked to fit together, and
    the record of HART's text encoder (``hart_text_encoder``: Qwen2-VL-1.5B-Instruct, last hidden layer, HART's
    system prompt, the zero-context null branch; ``text_encoder`` names another Hub id or folder of the same
    weights) with the context length the weights take."""
    from artok.pipeline import Pipeline
    from artok.sampling.hart import check_hart_compatible

    tok = hart_tokenizer_from_folder(tokenizer_dir)
    model = hart_transformer_from_folder(llm_dir)
    check_hart_compatible(model, tok)
    record = hart_text_encoder(max_length=model.config.max_context_tokens, context_dim=model.config.context_dim)
    if text_encoder is not None:
        record = record.replace(name_or_path=text_encoder)
    return Pipeline(tok, model, record)
