"""HART's hybrid tokenizer: parity with the official HARTAutoEncoder (fixtures/hart/tokenizer.*), properties,
training forward, freezing, save/load and bad input."""
import pytest
import torch
from einops import rearrange

import artok
from artok import convert
from artok.config import ConfigError
from artok.tokenizers.hybrid import HybridTokenizer
from conftest import assert_close, fixture_weights, load_fixture, uint8_to_pm1

SCALES = (1, 2, 3, 4, 6, 8)


def raster(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c h w -> b (h w) c")


@pytest.fixture(scope="module")
def hart():
    io, meta = load_fixture("hart/tokenizer")
    return convert.hart_tokenizer(fixture_weights("hart/tokenizer"), scales=SCALES), io, meta


@pytest.fixture
def tiny():
    return artok.build_tokenizer("tiny-hart-tokenizer").eval()


# -- parity ---------------------------------------------------------------------------------------------

def test_inferred_config(hart):
    tok, _, meta = hart
    c = tok.config
    assert isinstance(tok, HybridTokenizer) and c.quantizer.kind == "hybrid"
    assert (c.latent_channels, c.quantizer.codebook_size, c.encoder.ch) == (16, 192, 32)
    assert tuple(c.encoder.ch_mult) == tuple(meta["config"]["ch_mult"]) and c.image_size == 32
    assert tok.quantizer.phi.index == meta["phi_index_per_scale"]


def test_ids_residual_and_latents(hart):
    tok, io, meta = hart
    x = uint8_to_pm1(io["input_uint8"])
    assert abs(x.double().sum().item() - meta["input_img_sum"]) < 1e-2
    assert_close(tok.encode(x), io["f"], what="f")
    ids, f_rest, residual = tok.quantizer.split(io["f"])
    assert torch.equal(torch.cat(ids, 1), io["idx_all"])
    assert torch.equal(torch.cat(tok.tokenize(x), 1), io["idx_all"])
    assert_close(raster(f_rest), io["frest_last"], what="frest_last")
    assert_close(raster(residual), io["cont_residual"], what="cont_residual")
    assert_close(raster(tok.residual(x)), io["cont_residual"], what="residual(images)")
    for k in range(len(SCALES)):
        assert_close(tok.ids_to_latent(ids[: k + 1]), io[f"fhat_s{k}"], what=f"fhat_s{k}")
    assert_close(tok.ids_to_latent(ids), io["fhat_discrete"], what="fhat_discrete (φ on the last scale)")
    assert_close(tok.ids_to_latent(ids, residual=residual), io["fhat_hybrid"], what="fhat_hybrid (no φ last)")
    assert_close(tok.teacher_inputs(ids), io["var_input"], what="var_input")


def test_reconstructions(hart):
    tok, io, _ = hart
    ids = [io[f"idx_s{k}"] for k in range(len(SCALES))]
    residual = rearrange(io["cont_residual"], "b (h w) c -> b c h w", h=8)
    assert_close(tok.detokenize(ids), io["recon_discrete"], what="recon_discrete")
    assert_close(tok.detokenize(ids, residual), io["recon_hybrid"], what="recon_hybrid")
    assert_close(tok.decode(io["f"]), io["recon_continuous"], what="recon_continuous")


@pytest.mark.parametrize("skip,name", [(0.0, "hybrid"), (1.0, "discrete")])
def test_training_forward(hart, skip, name):
    tok, io, _ = hart
    tok.quantizer.train()
    try:
        out = tok.quantizer(io["f"], skip_continuous_prob=skip)
    finally:
        tok.quantizer.eval()
    assert torch.equal(torch.cat(out.ids, 1), io["fwd_idx_all"])
    assert_close(out.quantized, io[f"fwd_fhat_{name}"], what=f"fwd_fhat_{name}")
    assert_close(out.loss.reshape(1), io[f"fwd_loss_{name}"], what=f"fwd_loss_{name}")


# -- properties -----------------------------------------------------------------------------------------

def test_discrete_plus_residual_rebuilds_latent(tiny):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    f = tiny.encode(x)
    ids, residual = tiny.tokenize_hybrid(x)
    assert_close(tiny.ids_to_latent(ids, residual=residual), f, atol=1e-5, what="hybrid latent vs f")
    # the latents agree to 1e-6; the decoder's channels-last convolutions carry that to about 2e-5 per pixel
    assert_close(tiny.detokenize(ids, residual), tiny.decode(f), atol=5e-5, what="hybrid decode")
    # the residual is exactly what the discrete tokens (no φ on the last scale) leave out
    assert (tiny.detokenize(ids) - tiny.decode(f)).abs().max() > 1e-3
    # the AR path with a residual gives the same latent
    f_hat = None
    for si, idx in enumerate(ids):
        f_hat, _ = tiny.autoregressive_step(si, f_hat, idx, residual=residual if si == len(ids) - 1 else None)
    assert_close(f_hat, f, atol=1e-5, what="autoregressive hybrid latent")


def test_skip_continuous_is_per_sample(tiny):
    f = torch.randn(64, 8, 4, 4) * 0.1  # latents at the scale of the codebook
    tiny.quantizer.train()
    discrete = tiny.quantizer(f, skip_continuous_prob=1.0).quantized
    assert (discrete - f).abs().max() > 1e-3
    torch.manual_seed(3)
    mixed = tiny.quantizer(f, skip_continuous_prob=0.5)
    hybrid = ((mixed.quantized - f).flatten(1).abs().max(1).values < 1e-6)
    is_discrete = ((mixed.quantized - discrete).flatten(1).abs().max(1).values < 1e-6)
    assert bool((hybrid ^ is_discrete).all()), "every sample is either hybrid (= f) or discrete-only"
    assert 10 < int(hybrid.sum()) < 54
    assert abs(mixed.stats["continuous_fraction"].item() - hybrid.float().mean().item()) < 1e-6


def test_freeze_encoder_and_codebook(tiny):
    tiny.freeze()
    tiny.train()
    out = tiny(torch.rand(1, 3, 32, 32) * 2 - 1, skip_continuous_prob=0.0)
    (out.reconstruction.square().mean() + sum(out.losses.values())).backward()
    assert all(p.grad is None for p in tiny.encoder.parameters())
    assert all(p.grad is None for p in tiny.quant_conv.parameters())
    assert tiny.quantizer.codebook.embedding.weight.grad is None
    assert all(p.grad is not None for p in tiny.decoder.parameters())
    before = tiny.quantizer.codebook.embedding.weight.clone()
    tiny.quantizer(torch.randn(4, 8, 4, 4))  # a training step of the quantizer: no EMA, no restarts
    assert torch.equal(before, tiny.quantizer.codebook.embedding.weight)


def test_save_and_load(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "tok")
    loaded = artok.from_pretrained(tmp_path / "tok")
    assert isinstance(loaded, HybridTokenizer)
    f = torch.randn(1, 8, 4, 4) * 0.1
    ids, _, residual = tiny.quantizer.split(f)
    assert torch.equal(loaded.ids_to_latent(ids, residual=residual), tiny.ids_to_latent(ids, residual=residual))
    assert {k: v for k, v in loaded.state_dict().items()}.keys() == tiny.state_dict().keys()
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_build_tokenizer_picks_the_hybrid_class():
    assert isinstance(artok.build_tokenizer("tiny-hart-tokenizer"), HybridTokenizer)
    assert artok.tokenizer_config("hart-tokenizer-1024").image_size == 1024


# -- bad input ------------------------------------------------------------------------------------------

def test_residual_shape_errors(tiny):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ids, residual = tiny.tokenize_hybrid(x)
    with pytest.raises(ValueError, match=r"expected \(B, 8, 4, 4\).*raster tokens"):
        tiny.detokenize(ids, raster(residual))
    with pytest.raises(ValueError, match=r"expected \(B, 8, 4, 4\)"):
        tiny.detokenize(ids, residual[:, :4])
    with pytest.raises(ValueError, match="batch 1 but the ids have batch 2"):
        tiny.detokenize(ids, residual[:1])
    with pytest.raises(ValueError, match="belongs to the last scale"):
        tiny.autoregressive_step(0, None, ids[0], residual=residual)
    with pytest.raises(ValueError, match=r"skip_continuous_prob must be in \[0, 1\], got 1.5"):
        tiny.quantizer(tiny.encode(x), skip_continuous_prob=1.5)


def test_hybrid_tokenizer_needs_a_hybrid_quantizer():
    with pytest.raises(ConfigError, match="needs quantizer.kind 'hybrid', got 'msrq'"):
        HybridTokenizer(artok.tokenizer_config("tiny-var-vqvae"))
