"""Property and contract tests of the tokenizer core (tiny configs, CPU)."""
import pytest
import torch
import torch.nn.functional as F

import artok
from artok import build_tokenizer
from artok.config import ConvEncoderConfig, QuantizerConfig, TokenizerConfig
from artok.quantizers import MultiScaleResidualQuantizer, VectorQuantizer
from conftest import assert_close


def images(n=2, size=32):
    return torch.rand(n, 3, size, size) * 2 - 1


def smooth_latents(n, C=8, H=16):
    return F.interpolate(torch.randn(n, C, 4, 4), size=(H, H), mode="bicubic") + 0.1 * torch.randn(n, C, H, H)


@pytest.mark.parametrize("preset", ["tiny-var-vqvae", "tiny-vq"])
def test_decoding_ids_equals_quantized_latent(preset):
    tok = build_tokenizer(preset).eval()
    x = images()
    with torch.no_grad():
        out = tok(x)
        ids = tok.tokenize(x)
        for a, b in zip(ids, out.ids):
            assert torch.equal(a, b)
        assert_close(tok.ids_to_latent(ids), out.quantized, atol=1e-5, what="ids_to_latent vs quantized")
        assert_close(tok.detokenize(ids), out.reconstruction.clamp(-1, 1), atol=1e-5, what="detokenize vs forward")
    assert [i.shape for i in ids] == [(2, s * s) for s in tok.scales]
    assert all(i.dtype == torch.int64 for i in ids)


@pytest.mark.parametrize("quant_resi", [0.0, 0.5])
def test_residual_error_does_not_grow_with_scales(quant_resi):
    """Once the codebook has been fitted (EMA updates with dead-code restarts), every added scale lowers the
    reconstruction error of the latent."""
    q = MultiScaleResidualQuantizer(codebook_size=256, dim=8, scales=(1, 2, 4, 8, 16), quant_resi=quant_resi,
                                    ema_decay=0.8, dead_code_threshold=1.0).train()
    for _ in range(30):
        q(smooth_latents(16))
    q.eval()
    f = smooth_latents(8)
    errors = [(f - fh).pow(2).mean().item() for fh in q.cumulative_latents(f)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * f.pow(2).mean().item(), errors


@pytest.mark.parametrize("preset", ["tiny-var-vqvae", "tiny-vq"])
def test_save_load_identical_outputs(preset, tmp_path):
    tok = build_tokenizer(preset).eval()
    x = images()
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    loaded = artok.from_pretrained(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.config == tok.config
    with torch.no_grad():
        ids = tok.tokenize(x)
        assert all(torch.equal(a, b) for a, b in zip(ids, loaded.tokenize(x)))
        assert torch.equal(tok.detokenize(ids), loaded.detokenize(ids))
        assert torch.equal(tok.teacher_inputs(ids), loaded.teacher_inputs(ids))


@pytest.mark.parametrize("preset", ["tiny-var-vqvae", "tiny-vq"])
def test_every_parameter_gets_a_gradient(preset):
    tok = build_tokenizer(preset).train()
    x = images()
    out = tok(x)
    loss = (out.reconstruction - x).abs().mean() + sum(out.losses.values())
    loss.backward()
    missing = [n for n, p in tok.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in tok.parameters() if p.grad is not None)


def test_one_scale_multiscale_quantizer_is_plain_vq():
    """VAR's quantizer with one scale and φ = identity is exactly a plain VQ."""
    msrq = MultiScaleResidualQuantizer(codebook_size=64, dim=8, scales=(4,), quant_resi=0.0)
    vq = VectorQuantizer(codebook_size=64, dim=8, scales=(4,))
    vq.codebook.embedding.weight.data.copy_(torch.randn(64, 8))
    msrq.codebook.embedding.weight.data.copy_(vq.codebook.embedding.weight.data)
    f = torch.randn(3, 8, 4, 4)
    a, b = msrq.eval()(f), vq.eval()(f)
    assert torch.equal(a.ids[0], b.ids[0])
    assert_close(a.quantized, b.quantized, atol=1e-6, what="quantized")
    assert_close(msrq.ids_to_latent(a.ids), vq.ids_to_latent(b.ids), atol=1e-6, what="latent")
    assert_close(a.losses["commitment"], b.losses["commitment"], atol=1e-6, what="commitment")
    assert_close(a.losses["codebook"], b.losses["codebook"], atol=1e-6, what="codebook loss")


def test_raster_vq_teacher_inputs_and_steps():
    """Single-scale VQ generates in raster order: teacher input i is the code of token i; the step API
    rebuilds the latent token by token."""
    tok = build_tokenizer("tiny-vq").eval()
    ids = tok.tokenize(images())
    assert tok.block_sizes == [1] * 16
    ti = tok.teacher_inputs(ids)
    assert ti.shape == (2, 15, 8)
    f_hat, inputs = None, []
    for si in range(16):
        f_hat, nxt = tok.autoregressive_step(si, f_hat, ids[0][:, si:si + 1])
        if nxt is not None:
            inputs.append(nxt)
    assert_close(torch.cat(inputs, 1), ti, atol=0, what="raster inputs")
    assert_close(f_hat, tok.ids_to_latent(ids), atol=0, what="raster latent")


def test_cosine_codebook_selects_by_angle():
    vq = VectorQuantizer(codebook_size=2, dim=2, scales=(1,), l2_norm=True)
    vq.codebook.embedding.weight.data = torch.tensor([[10.0, 0.0], [0.0, 0.1]])
    f = torch.tensor([[0.1], [1.0]]).view(1, 2, 1, 1)  # nearer to code 0 in distance, to code 1 in angle
    out = vq.eval()(f)
    assert out.ids[0].item() == 1
    assert_close(out.quantized.flatten(), torch.tensor([0.0, 1.0]), atol=1e-6, what="normalised code")


def test_ema_codebook_moves_codes_to_assigned_means():
    vq = VectorQuantizer(codebook_size=2, dim=2, scales=(2,), ema_decay=0.5).train()
    vq.codebook.embedding.weight.data = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    vq.codebook.ema_sum.copy_(vq.codebook.embedding.weight.data)
    target = torch.tensor([[3.0, 1.0], [-3.0, -1.0]])
    f = torch.stack([target[0], target[1], target[0], target[1]]).T.reshape(1, 2, 2, 2)
    assert not vq.codebook.embedding.weight.requires_grad
    for _ in range(20):
        vq(f)
    assert_close(vq.codebook.embedding.weight.data, target, atol=1e-3, what="EMA codes")


def test_dead_codes_restart_from_encoder_outputs_and_usage_stats():
    q = MultiScaleResidualQuantizer(codebook_size=32, dim=4, scales=(1, 2, 4), dead_code_threshold=0.5).train()
    q.codebook.embedding.weight.data.fill_(100.0)  # every code far away: all but one are dead
    q.codebook.embedding.weight.data[0] = 0.0
    f = torch.randn(4, 4, 4, 4)
    q(f)
    assert q.codebook.restarted_last_update == 31
    new = q.codebook.embedding.weight.data[1:]
    assert new.abs().max() < 50, "restarted codes come from the batch, not the old far-away values"
    usage, ppl = q.codebook.usage_fraction(), q.codebook.perplexity()
    assert usage.shape == ppl.shape == (3,)
    assert q.codebook.usage.shape == (3, 32) and q.codebook.usage.sum() > 0
    out = q.eval()(f)
    assert out.stats["usage"] > 1 / 32, "after restarts more than one code is in use"
    assert torch.isfinite(out.stats["perplexity"])


def test_dead_code_criterion_is_per_scale_and_restarts_favour_the_scale_using_fewest_codes():
    from artok.quantizers.codebook import Codebook

    torch.manual_seed(0)
    V = 1000
    cb = Codebook(codebook_size=V, dim=2, num_scales=2, dead_code_threshold=0.1)
    hits = torch.zeros(2, V)
    hits[0, 0] = 4.0  # the 1x1 scale: 4 tokens a step, all on code 0 (far above 10% of its share 4/V)
    hits[1, :750] = 10.0  # the fine scale uses 750 codes
    coarse, fine = torch.full((4, 2), 10.0), torch.full((7500, 2), -10.0)
    cb.update(hits, None, [coarse, fine])
    alive = cb.alive()
    assert alive[0, 0] and not alive[0, 1:750].any(), "a code hit only by the coarse scale is alive"
    assert cb.restarted_last_update == V - 750, "exactly the codes unused at every scale restart"
    new = cb.weight.data[750:]
    assert set(new[:, 0].tolist()) <= {10.0, -10.0}, "restarted codes are encoder vectors of the batch"
    # P(coarse) = deficit 0.999 / (0.999 + 0.25) ≈ 0.8: the scale that uses fewest codes gets most
    from_coarse = (new[:, 0] > 0).float().mean().item()
    assert 0.7 < from_coarse < 0.9, from_coarse
    assert (cb.weight.data[:750] != new[0]).any()  # live codes untouched
    # the grace period: a restarted code counts as holding a uniform share of the scale it came from
    assert cb.alive()[:, 750:].any(0).all() and cb.restarted_last_update == V - 750
    cb.update(hits, None, [coarse, fine])
    assert cb.restarted_last_update == 0


def test_dead_codes_restart_only_from_scales_with_vectors():
    from artok.quantizers.codebook import Codebook

    cb = Codebook(codebook_size=16, dim=3, num_scales=2, dead_code_threshold=0.5)
    hits = torch.zeros(2, 16)
    hits[1, 0] = 8.0
    cb.update(hits, None, [torch.empty(0, 3), torch.ones(8, 3)])
    assert cb.restarted_last_update == 15 and torch.equal(cb.weight.data[1:], torch.ones(15, 3))
    with pytest.raises(ValueError, match="2 scales"):
        cb.update(hits, None, [torch.ones(8, 3)])


def test_quantizer_runs_in_fp32_under_autocast():
    tok = build_tokenizer("tiny-var-vqvae").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tok(images())
    assert out.losses["commitment"].dtype == torch.float32
    assert torch.isfinite(out.reconstruction).all()


def test_config_with_custom_encoder_layout():
    cfg = TokenizerConfig(image_size=16, latent_channels=4,
                          encoder=ConvEncoderConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=(0, 1),
                                                    mid_attn=False, dropout=0.1),
                          quantizer=QuantizerConfig(codebook_size=16, scales=(1, 2, 4, 8), share_quant_resi=0))
    tok = artok.build_tokenizer(cfg)
    assert len(tok.encoder.down[0].attn) == 1 and len(tok.decoder.up[0].attn) == 2
    assert len(tok.quantizer.phi.convs) == 4
    assert tok.detokenize(tok.tokenize(torch.rand(1, 3, 16, 16) * 2 - 1)).shape == (1, 3, 16, 16)
