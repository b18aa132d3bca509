"""Bad input fails with a clear message naming the problem."""
import pytest
import torch

import artok
from artok import CheckpointError, build_tokenizer, convert
from artok.convert import load_state_dict
from conftest import fixture_weights

SCALES = (1, 2, 3, 4, 5, 6, 8)


@pytest.fixture(scope="module")
def vqvae_sd():
    return load_state_dict(fixture_weights("var/vqvae"))


def test_missing_key_is_named(vqvae_sd):
    sd = dict(vqvae_sd)
    del sd["decoder.conv_out.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.conv_out\.bias"):
        convert.var_vqvae(sd, scales=SCALES)


def test_unexpected_key_is_named(vqvae_sd):
    sd = dict(vqvae_sd, **{"quantize.extra_table": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: quantizer\.extra_table"):
        convert.var_vqvae(sd, scales=SCALES)


def test_shape_mismatch_is_named(vqvae_sd):
    sd = dict(vqvae_sd)
    sd["post_quant_conv.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"post_quant_conv\.bias: checkpoint \(5,\) vs model \(8,\)"):
        convert.var_vqvae(sd, scales=SCALES)


def test_not_a_vqvae_checkpoint():
    with pytest.raises(CheckpointError, match="quantize.embedding.weight"):
        convert.var_vqvae({"head.weight": torch.zeros(2, 2)}, scales=SCALES)
    with pytest.raises(CheckpointError, match="does not exist"):
        convert.var_vqvae("/nonexistent/vae.pth", scales=SCALES)


def test_pth_is_read_weights_only(vqvae_sd, tmp_path):
    torch.save({"model": vqvae_sd}, tmp_path / "vae.pth")
    tok = convert.var_vqvae(tmp_path / "vae.pth", scales=SCALES)
    assert tok.codebook_size == 256
    (tmp_path / "evil.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        convert.var_vqvae(tmp_path / "evil.pth", scales=SCALES)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("tiny-var-vqvae").eval()


def test_images_wrong_range(tok):
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\].*\[0, 255\]"):
        tok.tokenize(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="floating point"):
        tok.tokenize(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_images_wrong_channels(tok):
    with pytest.raises(ValueError, match="3 channels.*got 1"):
        tok.tokenize(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tok.tokenize(torch.zeros(3, 32, 32))


def test_images_size_the_scales_cannot_tile(tok):
    with pytest.raises(ValueError, match=r"48x48 px do not fit.*needs 32x32"):
        tok.tokenize(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="do not fit"):
        tok.tokenize(torch.zeros(1, 3, 32, 64))


def test_bad_ids(tok):
    ids = tok.tokenize(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="outside the codebook"):
        tok.detokenize([ids[0], ids[1], ids[2] + 1000])
    with pytest.raises(ValueError, match="all 3 scales"):
        tok.detokenize(ids[:2])
    with pytest.raises(ValueError, match=r"scale 1 have shape \(2, 5\)"):
        tok.ids_to_latent([ids[0], torch.zeros(2, 5, dtype=torch.long)])


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        artok.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        artok.from_pretrained(tmp_path / "empty")
    tok = build_tokenizer("tiny-vq")
    tok.save_pretrained(tmp_path / "tok")
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tmp_path / "tok" / "model.safetensors"))
    sd.pop("quant_conv.bias")
    save_file(sd, str(tmp_path / "tok" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: quant_conv\.bias"):
        artok.from_pretrained(tmp_path / "tok")


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not be downloaded.*hf download"):
        artok.from_pretrained("someone/some-artok-model")
