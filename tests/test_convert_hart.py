"""HART checkpoint conversion: the released layouts (inferred manifests) on the meta device, the
``artok convert hart`` command on folders with config.json, and errors on bad checkpoints."""
import json

import pytest
import torch
from safetensors.torch import save_file

import artok
from artok import convert
from artok.cli import main
from artok.config import HART_SCALES_1024
from artok.convert.common import load_state_dict
from artok.convert.hart import hart_keys_to_artok
from artok.convert.var import var_keys_to_artok
from artok.hub import CheckpointError
from artok.registry import hart_config
from conftest import FIXTURES, assert_close, fixture_weights, load_fixture

SCALES = (1, 2, 3, 4, 6, 8)
CANDIDATES = ["manifest_hart_t2i_candidate_A_d24_noAdaLN.json", "manifest_hart_t2i_candidate_A2_d24_noAdaLN_sharedtable.json",
              "manifest_hart_t2i_candidate_B_d16_AdaLN.json"]


def manifest(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    data = json.loads((FIXTURES / "hart" / "manifests" / name).read_text())
    sd = {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta") for k, v in data["keys"].items()}
    return sd, data


# -- released layouts on meta ---------------------------------------------------------------------------

def test_release_tokenizer_builds_on_meta_with_matching_keys():
    sd, data = manifest("manifest_hart_tokenizer_1024px.json")
    tok = convert.hart_tokenizer(sd, scales=HART_SCALES_1024)
    assert all(t.is_meta for t in tok.state_dict().values())
    assert tok.config == artok.tokenizer_config("hart-tokenizer-1024")
    vae = {k[len("vae."):]: v for k, v in sd.items() if k.startswith("vae.")}
    assert len(vae) == data["vae_keys"] and len(sd) - len(vae) == data["disc_keys"]
    mapped, own = var_keys_to_artok(vae, tok.config), tok.state_dict()
    assert set(own) - set(mapped) == {"quantizer.codebook.num_updates"}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(own[k].shape) for k in mapped}


@pytest.mark.parametrize("name", CANDIDATES)
def test_release_transformer_candidates_build_on_meta_with_matching_keys(name):
    sd, data = manifest(name)
    model = convert.hart_transformer(sd, scales=HART_SCALES_1024)
    c, ref = model.config, data["config"]
    assert (c.depth, c.embed_dim, c.num_heads, c.context_dim, c.max_context_tokens) == (
        ref["depth"], ref["embed_dim"], ref["num_heads"], ref["context_dim"], ref["context_token"])
    assert c.adaln == ("pooled" if not ref["disable_aln"] else "shared_table" if ref["shared_aln"] else "none")
    assert (c.diffusion_head.width, c.diffusion_head.depth) == (ref["diff_width"], ref["diff_depth"])
    mapped, own = hart_keys_to_artok(sd, c), model.state_dict()
    assert set(mapped) == set(own)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in own.items()}
    dropped = set(sd) - {k for k in sd if not k.startswith(("lvl_1L", "attn_bias")) and "zero_k_bias" not in k}
    assert dropped == {"lvl_1L", "attn_bias_for_masking"} | {f"blocks.{i}.attn.zero_k_bias" for i in range(c.depth)}
    assert sum(p.numel() for p in model.parameters()) == data["num_parameters"]
    if "A2" in name:  # the shared-table candidate is artok's preset
        assert c == hart_config("hart-t2i-d24-1024")


def test_fixture_checkpoints_with_and_without_prefixes():
    plain = load_state_dict(fixture_weights("hart/tokenizer"))
    prefixed = {f"vae.{k}": v for k, v in plain.items()}
    prefixed["disc.main.0.weight"] = torch.zeros(1)
    a = convert.hart_tokenizer(plain, scales=SCALES)
    b = convert.hart_tokenizer(prefixed, scales=SCALES)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    llm = load_state_dict(fixture_weights("hart/hart_a"))
    head = convert.hart_diffusion_head(llm)  # the diffloss.* part of the llm checkpoint
    assert head.config.width == 48 and head.config.depth == 2


# -- artok convert hart ---------------------------------------------------------------------------------

def release_folders(tmp_path, name="hart_a"):
    tok_dir, llm_dir = tmp_path / "tokenizer", tmp_path / "llm"
    tok_dir.mkdir()
    llm_dir.mkdir()
    tok_sd = {f"vae.{k}": v.contiguous() for k, v in load_state_dict(fixture_weights("hart/tokenizer")).items()}
    save_file(tok_sd, str(tok_dir / "model.safetensors"))
    (tok_dir / "config.json").write_text(json.dumps(load_fixture("hart/tokenizer")[1]["config"]))
    llm_sd = {k: v.contiguous() for k, v in load_state_dict(fixture_weights(f"hart/{name}")).items()}
    save_file(llm_sd, str(llm_dir / "model.safetensors"))
    (llm_dir / "config.json").write_text(json.dumps(load_fixture(f"hart/{name}")[1]["config"]))
    return tok_dir, llm_dir


def test_convert_command_writes_a_pipeline(tmp_path, capsys):
    tok_dir, llm_dir = release_folders(tmp_path, "hart_b")  # hart_b: the head count comes from config.json
    out = tmp_path / "out"
    assert main(["convert", "hart", str(tok_dir), str(llm_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "HART transformer" in printed and "hybrid" in printed
    pipe = artok.from_pretrained(out)
    assert type(pipe.tokenizer).__name__ == "HybridTokenizer" and type(pipe.generator).__name__ == "HartTransformer"
    io, _ = load_fixture("hart/hart_b")
    with torch.no_grad():
        logits = pipe.generator(io["tf_x_BLCv_wo_first_l"], io["context"], context_mask=io["context_mask"],
                                context_position_ids=io["context_position_ids"],
                                keep=io["tf_kept_last_scale_positions"], drop=io["tf_context_dropped"]).logits
    assert_close(logits, io["tf_logits"], what="tf_logits after convert → save → load")
    assert main(["convert", "hart", str(tok_dir), str(llm_dir), str(out)]) == 2  # exists, no --overwrite


def test_missing_config_json(tmp_path, capsys):
    tok_dir, llm_dir = release_folders(tmp_path)
    (llm_dir / "config.json").unlink()
    assert main(["convert", "hart", str(tok_dir), str(llm_dir), str(tmp_path / "out")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="has no config.json"):
        convert.hart_pipeline(tok_dir, llm_dir)


def test_config_json_must_agree_with_the_weights(tmp_path):
    tok_dir, llm_dir = release_folders(tmp_path)
    config = json.loads((llm_dir / "config.json").read_text())
    (llm_dir / "config.json").write_text(json.dumps({**config, "depth": 3}))
    with pytest.raises(CheckpointError, match="says depth=3 but the weights have 2"):
        convert.hart_pipeline(tok_dir, llm_dir)
    (llm_dir / "config.json").write_text(json.dumps({**config, "attn_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="attn_type='gpt2' is not supported"):
        convert.hart_pipeline(tok_dir, llm_dir)
    (llm_dir / "config.json").write_text(json.dumps({**config, "patch_nums": [1, 2, 4, 8]}))
    with pytest.raises(CheckpointError, match="trained on 6 scales, but scales=.* has 4"):
        convert.hart_pipeline(tok_dir, llm_dir)


def test_bad_checkpoints():
    sd = load_state_dict(fixture_weights("hart/hart_a"))
    with pytest.raises(CheckpointError, match="'gpt2' blocks"):
        convert.hart_transformer({**sd, "blocks.0.attn.mat_qkv.weight": torch.zeros(1)}, scales=SCALES)
    with pytest.raises(CheckpointError, match="num_heads=4 given, but scale_mul_1H11 has 2 heads"):
        convert.hart_transformer(sd, scales=SCALES, num_heads=4)
    with pytest.raises(CheckpointError, match="missing keys: decoder_norm.weight"):
        convert.hart_transformer({k: v for k, v in sd.items() if k != "decoder_norm.weight"}, scales=SCALES)
    with pytest.raises(CheckpointError, match="not a HART transformer checkpoint: key 'head.weight' is missing"):
        convert.hart_transformer({k: v for k, v in sd.items() if k != "head.weight"}, scales=SCALES)
