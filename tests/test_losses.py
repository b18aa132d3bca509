"""Tokenizer training losses: reconstruction, LPIPS weight loading, PatchGAN, hinge, adaptive weight,
warm-up, entropy regulariser and their composition."""
from __future__ import annotations

import pytest
import torch

import artok
from artok.config import LossConfig
from artok.losses import (LPIPS, PatchDiscriminator, PerceptualWeightsError, TokenizerLoss, adaptive_weight,
                          discriminator_loss, entropy_regularizer, gan_warmup_factor, generator_loss,
                          reconstruction_loss)


def test_reconstruction_losses():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full((2, 3, 4, 4), 0.5)
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(x, y, "l2").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(x, y[:1])
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        reconstruction_loss(x, y, "l3")


def test_patch_discriminator_shapes_and_gradients():
    for norm in ("group", "batch", "none"):
        d = PatchDiscriminator(channels=8, num_layers=2, norm=norm)
        logits = d(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 1, 6, 6) and torch.isfinite(logits).all()
        logits.mean().backward()
        assert all(p.grad is not None for p in d.parameters())
    with pytest.raises(ValueError, match="'batch', 'group' or 'none'"):
        PatchDiscriminator(norm="layer")


def test_hinge_and_non_saturating_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # hinge: 0.5 * (mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, 0]))) = 0.5 * (0.25 + 0.5)
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.375)
    assert generator_loss(fake, "hinge").item() == pytest.approx(1.0)
    nsat = discriminator_loss(real, fake, "non-saturating")
    expected = 0.5 * (torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean())
    assert nsat.item() == pytest.approx(expected.item())
    # a perfect discriminator has zero hinge loss
    assert discriminator_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(8, 4)
    nll = (x @ w).abs().mean()
    g = -(x @ w).mean() * 3
    got = adaptive_weight(nll, g, w)
    gn, = torch.autograd.grad(nll, w, retain_graph=True)
    gg, = torch.autograd.grad(g, w, retain_graph=True)
    assert got.item() == pytest.approx((gn.norm() / (gg.norm() + 1e-4)).item(), rel=1e-5)
    assert not got.requires_grad
    assert adaptive_weight(nll, g * 1e-12, w, max_weight=10.0).item() == 10.0  # clamped


def test_gan_warmup():
    assert gan_warmup_factor(99, 100) == 0.0 and gan_warmup_factor(100, 100) == 1.0


def test_entropy_regularizer_prefers_confident_and_diverse_assignments():
    codebook = torch.eye(4) * 4
    diverse = codebook.repeat(2, 1)  # every code used, each vector on a code
    collapsed = codebook[:1].repeat(8, 1)
    assert entropy_regularizer(diverse, codebook, temperature=0.1) < entropy_regularizer(collapsed, codebook, temperature=0.1)
    z = torch.randn(8, 4, requires_grad=True)
    entropy_regularizer(z, codebook, temperature=1.0).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_entropy_regularizer_is_scale_invariant():
    torch.manual_seed(0)
    z, codebook = torch.randn(16, 4), torch.randn(8, 4)
    # the temperature is relative to the mean distance: a latent 10x larger gives the same loss
    base = entropy_regularizer(z, codebook, temperature=0.05)
    assert entropy_regularizer(10 * z, 10 * codebook, temperature=0.05).item() == pytest.approx(base.item(), rel=1e-4)


def test_lpips_without_weights_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PerceptualWeightsError) as info:
        LPIPS("vgg", download=False)
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path) in message and "perceptual_weight=0" in message
    with pytest.raises(PerceptualWeightsError, match="do not exist"):
        LPIPS("vgg", backbone_weights=tmp_path / "missing.pth")


def test_lpips_loads_the_backbone_weights_it_is_given(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.squeezenet1_1(weights=None)  # small stand-in for real ImageNet weights
    torch.save(net.state_dict(), tmp_path / "squeeze.pth")
    lpips = LPIPS("squeeze", backbone_weights=tmp_path / "squeeze.pth")
    assert torch.equal(lpips.model.net.slice1[0].weight, net.features[0].weight)
    assert torch.equal(lpips.model.net.slice7._modules["12"].expand3x3.weight, net.features[12].expand3x3.weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d_same, d_other = lpips(x, x), lpips(x, x.flip(-1))
    assert d_same.shape == (2,) and d_same.abs().max() < 1e-6 and (d_other > 0).all()
    assert not any(p.requires_grad for p in lpips.parameters())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(PerceptualWeightsError, match="lacks"):
        LPIPS("squeeze", backbone_weights=tmp_path / "wrong.pth")


def _output(tok, images):
    tok.train()
    return tok(images)


def test_tokenizer_loss_composition_and_gan_warmup():
    torch.manual_seed(0)
    tok = artok.build_tokenizer("tiny-var-vqvae")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    disc = PatchDiscriminator(channels=8, num_layers=2)
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, gan_weight=0.5, gan_start_step=10, commitment_weight=2.0))
    out = _output(tok, images)
    early, logs = loss_fn.generator_loss(out, images, step=9, tokenizer=tok, discriminator=disc)
    assert "generator" not in logs  # warm-up: reconstruction only
    expected = logs["reconstruction"] + 2.0 * logs["commitment"] + logs["codebook"]
    assert early.item() == pytest.approx(expected.item(), rel=1e-5)
    late, logs = loss_fn.generator_loss(out, images, step=10, tokenizer=tok, discriminator=disc)
    assert "generator" in logs and logs["adaptive_weight"] > 0
    assert late.item() == pytest.approx((early + 0.5 * logs["adaptive_weight"] * logs["generator"]).item(), rel=1e-4)
    d_loss, d_logs = loss_fn.discriminator_loss(disc, images, out.reconstruction)
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert set(d_logs) == {"discriminator", "logits_real", "logits_fake"}


def test_entropy_term_reaches_the_encoder_through_every_scale():
    tok = artok.build_tokenizer("tiny-var-vqvae").train()
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, entropy_weight=1.0))
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert [z.shape for z in out.quantizer_inputs] == [(2 * s * s, tok.quantizer.dim) for s in tok.scales]
    # the inputs are the vectors that chose the codes: their nearest codes are the ids
    for z, ids in zip(out.quantizer_inputs, out.ids):
        assert torch.equal(tok.quantizer.codebook.nearest(z.detach()), ids.flatten())
    loss_fn.entropy(out.quantizer_inputs[:1], tok).backward()  # the 1x1 scale alone
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0
    _, logs = loss_fn.generator_loss(out, torch.zeros(2, 3, 32, 32), step=0, tokenizer=tok)
    assert "entropy" in logs
