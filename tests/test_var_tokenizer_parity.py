"""Parity with the official VAR VQVAE and VectorQuantizer2 (fixtures/var/vqvae.*, quantizer.*), via artok.convert."""
import pytest
import torch

from artok import convert
from artok.quantizers import phi_index_per_scale
from conftest import assert_close, fixture_weights, load_fixture, uint8_to_pm1

VQVAE_SCALES = (1, 2, 3, 4, 5, 6, 8)
RELEASE_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@pytest.fixture(scope="module")
def vqvae():
    io, meta = load_fixture("var/vqvae")
    tok = convert.var_vqvae(fixture_weights("var/vqvae"), scales=VQVAE_SCALES)
    return tok, io, meta


@pytest.fixture(scope="module")
def quantizer():
    io, meta = load_fixture("var/quantizer")
    return convert.var_quantizer(fixture_weights("var/quantizer"), scales=RELEASE_SCALES), io, meta


def test_inferred_config(vqvae):
    tok, _, meta = vqvae
    c = tok.config
    assert (c.latent_channels, c.quantizer.codebook_size, c.encoder.ch) == (8, 256, 32)
    assert tuple(c.encoder.ch_mult) == tuple(meta["fixed_internals"]["ch_mult"])
    assert c.encoder.num_res_blocks == 2 and c.quantizer.share_quant_resi == 4 and c.image_size == 128
    assert tok.quantizer.phi.index == meta["phi_index_per_scale"]


def test_encoder_and_latent(vqvae):
    tok, io, meta = vqvae
    x = uint8_to_pm1(io["input_uint8"])
    assert abs(x.double().sum().item() - meta["input_img_sum"]) < 1e-2
    with torch.no_grad():
        assert_close(tok.encoder(x), io["encoder_out"], what="encoder_out")
        assert_close(tok.encode(x), io["f"], what="f")


def test_ids_identical_at_every_scale(vqvae):
    tok, io, _ = vqvae
    ids = tok.tokenize(uint8_to_pm1(io["input_uint8"]))
    for k, idx in enumerate(ids):
        assert torch.equal(idx, io[f"idx_s{k}"]), f"scale {k}: ids differ"


def test_latents_teacher_inputs_and_reconstruction(vqvae):
    tok, io, _ = vqvae
    ids = [io[f"idx_s{k}"] for k in range(len(VQVAE_SCALES))]
    with torch.no_grad():
        for k, fhat in enumerate(tok.quantizer.cumulative_latents(io["f"])):
            assert_close(fhat, io[f"fhat_s{k}"], what=f"fhat_s{k}")
        for k in range(len(ids)):
            assert_close(tok.ids_to_latent(ids[: k + 1]), io[f"fhat_s{k}"], what=f"ids_to_latent s{k}")
            assert_close(tok.ids_to_latent(ids[: k + 1], progressive=True), io[f"fhat_noshape_s{k}"],
                         what=f"progressive s{k}")
        assert_close(tok.teacher_inputs(ids), io["var_input"], what="var_input")
        assert_close(tok.detokenize(ids), io["recon_from_idx"], what="recon_from_idx")


def test_training_forward(vqvae):
    tok, io, _ = vqvae
    q = tok.quantizer.train()
    try:
        out = q(io["f"].clone().requires_grad_())
    finally:
        q.eval()
    assert_close(out.quantized.detach(), io["fwd_fhat"], what="fwd_fhat")
    assert_close(out.loss.detach().reshape(1), io["fwd_vq_loss"], what="fwd_vq_loss")


def test_quantizer_release_schedule(quantizer):
    q, io, meta = quantizer
    assert q.phi.index == meta["phi_index_per_scale"]
    ids = q.quantize(io["f"])
    for k, idx in enumerate(ids):
        assert torch.equal(idx, io[f"idx_s{k}"]), f"scale {k}: ids differ"
    assert torch.equal(torch.cat(ids, 1), io["idx_all"])
    with torch.no_grad():
        for k, fhat in enumerate(q.cumulative_latents(io["f"])):
            assert_close(fhat, io[f"fhat_s{k}"], what=f"fhat_s{k}")
        for k in range(len(ids)):
            assert_close(q.ids_to_latent(ids[: k + 1], progressive=True), io[f"fhat_embed_noshape_s{k}"],
                         what=f"noshape s{k}")
        assert_close(q.ids_to_latent(ids), io["fhat_s9"], atol=1e-5, what="embed_to_fhat")
        assert_close(q.teacher_inputs(ids), io["var_input"], what="var_input")


def test_autoregressive_steps_rebuild_teacher_inputs(quantizer):
    """Feeding the true ids step by step returns area(f̂_k, pn_{k+1}), and f̂ of the last scale at the end."""
    q, io, _ = quantizer
    ids = [io[f"idx_s{k}"] for k in range(len(RELEASE_SCALES))]
    f_hat, inputs = None, []
    with torch.no_grad():
        for si, idx in enumerate(ids):
            f_hat, nxt = q.autoregressive_step(si, f_hat, idx)
            if nxt is not None:
                inputs.append(nxt)
        assert_close(torch.cat(inputs, 1), io["var_input"], what="AR inputs")
        assert_close(f_hat, io["fhat_s9"], atol=1e-5, what="AR f_hat")


@pytest.mark.parametrize("num_scales, expected", [
    (4, [0, 1, 2, 3]), (5, [0, 1, 2, 2, 3]), (6, [0, 0, 1, 2, 3, 3]), (7, [0, 0, 1, 2, 2, 3, 3]),
    (10, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]), (14, [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]),
])
def test_phi_sharing_tables(num_scales, expected):
    """The README's hard-coded K=4 tables, including the float-rounded ties."""
    assert phi_index_per_scale(4, num_scales) == expected
