"""Official VAR transformer checkpoints → artok Generator: fixture parity, key map, full-size manifests."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import artok
from artok import convert
from artok.cli import main as cli
from artok.convert.var_transformer import official_key_to_artok, var_keys_to_artok
from artok.hub import CheckpointError
from artok.registry import VAR_SCALES_256, VAR_SCALES_512, generator_config

VAR = Path(__file__).parent / "fixtures" / "var"
SCALES = (1, 2, 3, 4, 5, 6, 8)  # the var_a / var_b fixtures
HEADS = {"var_a": None, "var_b": 2}  # var_b has no l2-norm attention, so its head count must be given


def io(name: str) -> dict:
    return load_file(str(VAR / f"{name}_io.safetensors"))


def weights(name: str) -> Path:
    return VAR / f"{name}_state_dict.safetensors"


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("name", ["var_a", "var_b"])
def test_teacher_forcing_logits_match_the_official_model(name):
    gen = convert.var_transformer(weights(name), scales=SCALES, num_heads=HEADS[name])
    spec = json.loads((VAR / f"{name}.json").read_text())["constructor"]
    cfg = gen.config
    assert (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.num_classes) == (
        spec["depth"], spec["embed_dim"], spec["num_heads"], spec["num_classes"])
    assert (cfg.shared_adaln, cfg.attention_l2_norm) == (spec["shared_aln"], spec["attn_l2_norm"])
    assert not gen.training
    ref = io(name)
    with torch.no_grad():
        logits = gen(io("vqvae")["var_input"], ref["tf_labels"])
    d = max_diff(logits, ref["tf_logits"])
    assert torch.allclose(logits, ref["tf_logits"], atol=1e-4, rtol=1e-4), f"{name}: max abs diff {d:.3e}"


def test_teacher_inputs_of_the_converted_tokenizer_feed_the_generator():
    """The whole chain through artok: tokenizer ids → teacher inputs → logits, against the fixture."""
    tok = convert.var_vqvae(VAR / "vqvae_state_dict.safetensors", scales=SCALES)
    gen = convert.var_transformer(weights("var_a"), scales=SCALES)
    ids = tok.split_ids(io("vqvae")["idx_all"])
    with torch.no_grad():
        logits = gen(tok.teacher_inputs(ids), io("var_a")["tf_labels"])
    assert torch.allclose(logits, io("var_a")["tf_logits"], atol=1e-4, rtol=1e-4), max_diff(logits, io("var_a")["tf_logits"])


def test_key_map_renames_every_official_key():
    cases = {
        "pos_start": "start_embed", "pos_1LC": "pos_embed", "class_emb.weight": "class_embed.weight",
        "lvl_embed.weight": "level_embed.weight", "shared_ada_lin.1.bias": "shared_adaln.bias",
        "blocks.11.ada_lin.1.weight": "blocks.11.adaln.weight", "blocks.3.ada_gss": "blocks.3.adaln_bias",
        "blocks.0.attn.mat_qkv.weight": "blocks.0.attn.qkv.weight",
        "blocks.7.attn.scale_mul_1H11": "blocks.7.attn.log_scale", "head_nm.ada_lin.1.weight": "head_adaln.weight",
        "blocks.2.attn.q_bias": "blocks.2.attn.q_bias", "blocks.2.ffn.fc1.weight": "blocks.2.ffn.fc1.weight",
        "head.bias": "head.bias", "word_embed.weight": "word_embed.weight",
    }
    for official, ours in cases.items():
        assert official_key_to_artok(official) == ours
    for name in ("var_a", "var_b"):
        sd = load_file(str(weights(name)))
        mapped = var_keys_to_artok(sd)
        gen = convert.var_transformer(weights(name), scales=SCALES, num_heads=HEADS[name])
        assert set(mapped) == set(gen.state_dict()), set(mapped) ^ set(gen.state_dict())
        assert len(sd) - len(mapped) == 2 + gen.config.depth  # lvl_1L, attn_bias_for_masking, zero_k_bias per block


MANIFESTS = [("d16", VAR_SCALES_256, "var-d16"), ("d20", VAR_SCALES_256, "var-d20"),
             ("d24", VAR_SCALES_256, "var-d24"), ("d30", VAR_SCALES_256, "var-d30"),
             ("d36_saln_512", VAR_SCALES_512, "var-d36")]


def meta_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {k: torch.empty(v["shape"], dtype=dtypes[v["dtype"]], device="meta") for k, v in manifest["keys"].items()}


@pytest.mark.parametrize("name,scales,preset", MANIFESTS)
def test_full_size_manifests_build_on_meta_with_matching_keys_and_shapes(name, scales, preset):
    manifest = json.loads((VAR / "manifests" / f"manifest_var_{name}.json").read_text())
    sd = meta_state_dict(manifest)
    gen = convert.var_transformer(sd, scales=scales)  # strict: every key and shape must match
    assert gen.pos_embed.is_meta
    assert gen.config == generator_config(preset), "the preset must describe the released checkpoint"
    own = gen.state_dict()
    for official, tensor in var_keys_to_artok(sd).items():
        assert tuple(own[official].shape) == tuple(tensor.shape), official
    assert sum(p.numel() for p in gen.parameters()) == manifest["num_parameters_excluding_buffers"]


def test_wrong_scales_missing_heads_and_bad_keys_are_reported():
    sd = load_file(str(weights("var_a")))
    with pytest.raises(CheckpointError, match=r"7 scales with L = 155.*scales=\(1, 2, 4\) give 3 scales"):
        convert.var_transformer(sd, scales=(1, 2, 4))
    with pytest.raises(CheckpointError, match="num_heads=4 disagrees.*2 heads"):
        convert.var_transformer(sd, scales=SCALES, num_heads=4)
    with pytest.raises(CheckpointError, match="cannot be read from it: pass num_heads"):
        convert.var_transformer(weights("var_b"), scales=SCALES)
    broken = dict(sd)
    broken["blocks.0.attn.extra"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.0\.attn\.extra"):
        convert.var_transformer(broken, scales=SCALES)
    broken = {k: v for k, v in sd.items() if k != "blocks.1.ffn.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\.ffn\.fc2\.bias"):
        convert.var_transformer(broken, scales=SCALES)
    broken = dict(sd)
    broken["lvl_1L"] = sd["lvl_1L"].flip(-1)
    with pytest.raises(CheckpointError, match="lvl_1L"):
        convert.var_transformer(broken, scales=SCALES)


def test_cli_convert_var_writes_a_pipeline(tmp_path, capsys):
    out = tmp_path / "pipe"
    assert cli(["convert", "var", str(VAR / "vqvae_state_dict.safetensors"), str(weights("var_b")), str(out),
                "--scales", *map(str, SCALES), "--num-heads", "2"]) == 0
    assert (out / "tokenizer" / "model.safetensors").exists() and (out / "generator" / "model.safetensors").exists()
    assert "generator (next-scale (VAR))" in capsys.readouterr().out
    pipe = artok.from_pretrained(out)
    assert isinstance(pipe, artok.Pipeline)
    with torch.no_grad():
        logits = pipe.generator(io("vqvae")["var_input"], io("var_b")["tf_labels"])
    assert torch.allclose(logits, io("var_b")["tf_logits"], atol=1e-4, rtol=1e-4)
    # refuses to overwrite, and names the problem with a mismatched tokenizer
    assert cli(["convert", "var", str(VAR / "vqvae_state_dict.safetensors"), str(weights("var_b")), str(out),
                "--scales", *map(str, SCALES), "--num-heads", "2"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_pth_checkpoints_load_with_weights_only(tmp_path):
    """Released weights are .pth files of plain state dicts (fp32 here; the fixture stores fp8)."""
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights("var_a"))).items()}
    torch.save(sd, tmp_path / "var_d2.pth")
    gen = convert.var_transformer(tmp_path / "var_d2.pth", scales=SCALES)
    with torch.no_grad():
        logits = gen(io("vqvae")["var_input"], io("var_a")["tf_labels"])
    assert torch.allclose(logits, io("var_a")["tf_logits"], atol=1e-4, rtol=1e-4)
