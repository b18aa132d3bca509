"""Mixed-scale gated tokens (MSViT): gate decisions, the straight-through estimator, the compute target,
padding of images with different token counts, and the scatter back to the fine grid."""
import pytest
import torch

from artok.encoders.mixed_scale import MixedScaleViTEncoder, gumbel_sigmoid, straight_through
from artok.encoders.vit import ViTEncoder
from conftest import assert_close

VIT = dict(latent_channels=8, image_size=32, patch_size=4, width=32, depth=2, num_heads=2)


def images(n=2):
    return torch.rand(n, 3, 32, 32) * 2 - 1


@pytest.mark.parametrize("positions", ["sincos", "learned"])
def test_all_fine_gate_equals_the_plain_vit_encoder(positions):
    vit = ViTEncoder(**VIT, positions=positions)
    msvit = MixedScaleViTEncoder(**VIT, positions=positions)
    missing, unexpected = msvit.load_state_dict(vit.state_dict(), strict=False)
    assert all(k.startswith("gate.") for k in missing) and not unexpected
    x = images()
    out = msvit(x, fine_mask=torch.ones(2, 4, 4, dtype=torch.bool))
    assert_close(out, vit(x), atol=1e-5, what="all-fine MSViT vs ViT")
    assert msvit.last_stats["encoder_attention_tokens"] == 64 and msvit.last_stats["encoder_fine_fraction"] == 1


def test_a_gate_that_always_says_fine_also_equals_vit_in_eval_mode():
    vit = ViTEncoder(**VIT)
    msvit = MixedScaleViTEncoder(**VIT).eval()
    msvit.load_state_dict(vit.state_dict(), strict=False)
    torch.nn.init.constant_(msvit.gate[-1].bias, 50.0)  # sigmoid → 1 for every region
    x = images()
    assert_close(msvit(x), vit(x), atol=1e-5, what="gate-decided all-fine vs ViT")


def test_all_coarse_uses_one_token_per_region_and_fills_it():
    enc = MixedScaleViTEncoder(**VIT, coarse_factor=4)
    out = enc(images(), fine_mask=torch.zeros(2, 2, 2, dtype=torch.bool))
    assert enc.last_stats["encoder_attention_tokens"] == 4
    regions = out.reshape(2, 8, 2, 4, 2, 4)  # (B, C, y, i, x, j)
    assert torch.equal(regions, regions[:, :, :, :1, :, :1].expand_as(regions))


def test_padding_does_not_leak_between_images_with_different_token_counts():
    enc = MixedScaleViTEncoder(**VIT)
    x = images(2)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :2] = True  # image 0: 8 fine regions (8·4 + 8 = 40 tokens), image 1: all coarse (16 tokens)
    together = enc(x, fine_mask=mask)
    assert enc.last_stats["encoder_attention_tokens"] == (40 + 16) / 2
    for b in range(2):
        alone = enc(x[b:b + 1], fine_mask=mask[b:b + 1])
        assert_close(together[b:b + 1], alone, atol=1e-5, what=f"image {b} in a padded batch vs alone")


def test_fine_cells_of_fine_regions_read_their_own_token():
    enc = MixedScaleViTEncoder(**VIT).eval()
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    out = enc(images(1), fine_mask=mask)
    region = out[0, :, 2:4, 4:6].flatten(1).T  # the four fine cells of region (1, 2)
    assert torch.unique(region, dim=0).shape[0] == 4
    other = out[0, :, 0:2, 0:2].flatten(1).T
    assert torch.unique(other, dim=0).shape[0] == 1


def test_straight_through_estimator():
    logits = torch.tensor([-3.0, 0.5, 4.0], requires_grad=True)
    soft = torch.sigmoid(logits)
    hard, gate = straight_through(soft)
    assert torch.equal(hard, torch.tensor([0.0, 1.0, 1.0])) and torch.equal(gate, hard)
    gate.sum().backward()
    assert_close(logits.grad, soft * (1 - soft), atol=1e-6, what="STE gradient = d sigmoid")


def test_gumbel_sigmoid_samples_at_the_gate_probability():
    torch.manual_seed(0)
    logits = torch.full((20000,), 0.8473)  # sigmoid = 0.7
    fraction = (gumbel_sigmoid(logits) > 0.5).float().mean().item()
    assert abs(fraction - 0.7) < 0.02, fraction
    sharp = gumbel_sigmoid(logits, temperature=0.05)
    assert ((sharp < 0.05) | (sharp > 0.95)).float().mean() > 0.9


def test_gate_learns_through_the_estimator_from_the_task_loss_alone():
    enc = MixedScaleViTEncoder(**VIT, gate_loss_weight=0.0).train()
    enc(images()).square().mean().backward()
    grads = [p.grad for p in enc.gate.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert enc.gate[-1].weight.grad.abs().sum() > 0


def test_compute_target_loss_pulls_the_fine_fraction_to_the_target():
    enc = MixedScaleViTEncoder(**VIT, target_fine_fraction=0.5)
    enc.target_fine_fraction = 0.9  # start far from the new target
    opt = torch.optim.SGD(enc.gate.parameters(), lr=1.0)
    x = images(4)
    for _ in range(20):
        enc(x)
        loss = enc.last_losses["gate_compute"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        enc(x)
    assert enc.last_stats["encoder_fine_fraction"] > 0.8
    assert enc.last_losses["gate_compute"] < 1e-4  # mean fine probability at the target


def test_bad_fine_mask_shape_is_reported():
    enc = MixedScaleViTEncoder(**VIT)
    with pytest.raises(ValueError, match="2x4x4"):
        enc(images(), fine_mask=torch.ones(2, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("quantizer", ["msrq", "hybrid"])
def test_tokenizers_report_the_compute_target_loss_and_token_counts(quantizer):
    from artok.config import MixedScaleEncoderConfig, QuantizerConfig, TokenizerConfig
    from artok.tokenizers import Tokenizer
    from artok.tokenizers.hybrid import HybridTokenizer

    cfg = TokenizerConfig(image_size=32, latent_channels=8,
                          encoder=MixedScaleEncoderConfig(patch_size=8, width=32, depth=1, num_heads=2),
                          quantizer=QuantizerConfig(kind=quantizer, codebook_size=64, scales=(1, 2, 4),
                                                    share_quant_resi=3))
    tok = (HybridTokenizer if quantizer == "hybrid" else Tokenizer)(cfg)
    out = tok(images())
    assert {"gate_compute", "commitment"} <= set(out.losses)
    assert {"encoder_attention_tokens", "encoder_fine_fraction"} <= set(out.stats)
