"""ViT encoder/decoder, the ViT-family encoder configs, and the acceptance test of every token-reduction
encoder inside a multi-scale tokenizer (tiny configs, CPU)."""
import pytest
import torch

import artok
from artok.config import (ConfigError, MixedScaleEncoderConfig, QuadtreeEncoderConfig, QuantizerConfig,
                          SuperTokenEncoderConfig, TokenizerConfig, TokenMergeEncoderConfig, ViTEncoderConfig)
from artok.encoders import ViTDecoder, ViTEncoder, build_decoder, build_encoder
from artok.encoders.vit import PatchEmbed, PositionEmbedding, grid_centres, sincos_position_embedding
from artok.tokenizers import Tokenizer
from conftest import assert_close

TINY = dict(patch_size=8, width=32, depth=2, num_heads=2)
ENCODERS = {
    "vit": ViTEncoderConfig(**TINY),
    "tome": TokenMergeEncoderConfig(**TINY, merge_per_layer=3),
    "tome-decreasing": TokenMergeEncoderConfig(**TINY, merge_per_layer=3, merge_schedule="decreasing"),
    "msvit": MixedScaleEncoderConfig(**TINY, gate_hidden=16),
    "quadtree": QuadtreeEncoderConfig(**TINY, token_budget=10),
    "quadtree-feature": QuadtreeEncoderConfig(**TINY, token_budget=7, scorer="feature", positions="learned"),
    "stvit": SuperTokenEncoderConfig(**TINY, sampling_iterations=2),
    "vit-conv-stem": ViTEncoderConfig(**TINY, conv_stem=True, positions="learned"),
}


def tiny_tokenizer(encoder, *, scales=(1, 2, 4), image_size=32) -> Tokenizer:
    return Tokenizer(TokenizerConfig(
        image_size=image_size, latent_channels=8, encoder=encoder,
        quantizer=QuantizerConfig(kind="msrq", codebook_size=64, scales=scales, share_quant_resi=len(scales))))


def images(n=2, size=32):
    return torch.rand(n, 3, size, size) * 2 - 1


# ---------------------------------------------------------------------------------------------------------
# Acceptance: every encoder inside a multi-scale tokenizer
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_trains_and_tokenizes_inside_multiscale_tokenizer(name):
    tok = tiny_tokenizer(ENCODERS[name]).train()
    assert type(tok.decoder) is ViTDecoder  # decoder None mirrors the encoder config
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    x = images(4)
    losses = []
    for _ in range(3):
        out = tok(x)
        loss = (out.reconstruction - x).abs().mean() + sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        no_grad = [n for n, p in tok.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not no_grad, f"{name}: missing or non-finite gradient in {no_grad}"
        if name == "msvit":
            assert tok.encoder.gate[-1].weight.grad.abs().sum() > 0, "gate got no gradient through the estimator"
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert "encoder_attention_tokens" in out.stats
    tok.eval()
    ids = tok.tokenize(x)
    assert [i.shape for i in ids] == [(4, s * s) for s in (1, 2, 4)]
    rec = tok.detokenize(ids)
    assert rec.shape == x.shape and rec.min() >= -1 and rec.max() <= 1
    with torch.no_grad():
        assert_close(tok.detokenize(ids), tok(x).reconstruction.clamp(-1, 1), atol=1e-5, what=f"{name} detokenize")


@pytest.mark.parametrize("name", ["tome", "msvit", "quadtree", "stvit"])
def test_scales_ending_at_8_with_patch_4(name):
    enc = ENCODERS[name].replace(patch_size=4, **({"token_budget": 40} if name == "quadtree" else {}))
    tok = tiny_tokenizer(enc, scales=(1, 2, 4, 8)).eval()
    ids = tok.tokenize(images())
    assert [i.shape[1] for i in ids] == [1, 4, 16, 64]
    assert tok.encoder.last_stats["encoder_attention_tokens"] < 64


@pytest.mark.parametrize("name", ["vit", "tome", "msvit", "quadtree", "stvit"])
def test_save_load_round_trip(name, tmp_path):
    tok = tiny_tokenizer(ENCODERS[name]).eval()
    tok.save_pretrained(tmp_path / "tok")
    loaded = artok.from_pretrained(tmp_path / "tok")
    assert loaded.config == tok.config and type(loaded.encoder) is type(tok.encoder)
    x = images()
    with torch.no_grad():
        assert torch.equal(tok.encode(x), loaded.encode(x))
        ids = tok.tokenize(x)
        assert torch.equal(tok.detokenize(ids), loaded.detokenize(ids))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_yaml_round_trip_selects_the_encoder_class(name):
    cfg = tiny_tokenizer(ENCODERS[name]).config
    again = TokenizerConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and type(again.encoder) is type(cfg.encoder)


# ---------------------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, field, value", [
    (ViTEncoderConfig, "width", 30),  # not divisible by num_heads=8
    (ViTEncoderConfig, "positions", "sine"),
    (ViTEncoderConfig, "patch_size", 0),
    (TokenMergeEncoderConfig, "merge_per_layer", -1),
    (TokenMergeEncoderConfig, "merge_schedule", "increasing"),
    (MixedScaleEncoderConfig, "coarse_factor", 1),
    (MixedScaleEncoderConfig, "target_fine_fraction", 1.5),
    (MixedScaleEncoderConfig, "gate_temperature", 0.0),
    (QuadtreeEncoderConfig, "scorer", "entropy"),
    (QuadtreeEncoderConfig, "levels", 0),
    (SuperTokenEncoderConfig, "sampling_iterations", 0),
])
def test_bad_config_values_name_the_field(cls, field, value):
    with pytest.raises(ConfigError, match=field):
        cls(**{field: value})


def test_conv_stem_needs_power_of_two_patch_and_pixel_resize():
    with pytest.raises(ConfigError, match="patch_size"):
        ViTEncoderConfig(patch_size=12, conv_stem=True)
    with pytest.raises(ConfigError, match="coarse_embedding"):
        MixedScaleEncoderConfig(patch_size=8, conv_stem=True)


def test_unknown_key_and_kind_are_rejected():
    with pytest.raises(ConfigError, match="did you mean 'merge_per_layer'"):
        TokenizerConfig.from_dict({"encoder": {"kind": "tome", "merge_per_layr": 4}})
    with pytest.raises(ConfigError, match="unknown encoder 'tomee'"):
        TokenizerConfig.from_dict({"encoder": {"kind": "tomee"}})


@pytest.mark.parametrize("encoder, message", [
    (MixedScaleEncoderConfig(**TINY, coarse_factor=8), "coarse_factor 8"),
    (QuadtreeEncoderConfig(**TINY, levels=3), "levels=3"),
    (QuadtreeEncoderConfig(**{**TINY, "patch_size": 4}, levels=1, token_budget=3), "token_budget 3"),
    (SuperTokenEncoderConfig(**TINY, super_token_size=3), "super_token_size 3"),
])
def test_size_dependent_errors_surface_when_building(encoder, message):
    with pytest.raises(ConfigError, match=message):
        build_encoder(encoder, 8, 32)


def test_downsample_factor_must_match_last_scale():
    with pytest.raises(ConfigError, match="last quantizer scale"):
        tiny_tokenizer(ViTEncoderConfig(**{**TINY, "patch_size": 4}))


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------

def test_vit_encoder_decoder_shapes_and_input_check():
    enc = build_encoder(ENCODERS["vit"], 8, 32)
    dec = build_decoder(ENCODERS["vit"], 8, 32)
    f = enc(images(3))
    assert f.shape == (3, 8, 4, 4)
    assert dec(f).shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        enc(images(1, 64))
    with pytest.raises(ValueError, match=r"\(B, 8, 4, 4\)"):
        dec(torch.zeros(1, 4, 4, 4))


def test_conv_stem_decoder_last_layer_is_conv_out():
    tok = tiny_tokenizer(ENCODERS["vit-conv-stem"])
    assert tok.last_decoder_layer() is tok.decoder.conv_out.weight
    assert tok.decoder.conv_out.out_channels == 3


def test_sincos_positions_match_at_integer_and_half_positions():
    pos = PositionEmbedding(grid_size=4, width=32, kind="sincos")
    assert torch.equal(pos.at(grid_centres(4, 4)), pos.table())
    # a row-only shift changes only the row half of the channels
    a, b = pos.at(torch.tensor([[1.5, 2.0]])), pos.at(torch.tensor([[2.5, 2.0]]))
    assert torch.equal(a[:, 16:], b[:, 16:]) and not torch.equal(a[:, :16], b[:, :16])
    assert_close(sincos_position_embedding(torch.tensor([[0.0, 0.0]]), 8),
                 torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]]), what="sincos at origin")


def test_learned_positions_interpolate_bilinearly():
    pos = PositionEmbedding(grid_size=4, width=8, kind="learned")
    table = pos.table()
    assert_close(pos.at(grid_centres(4, 4)), table, atol=1e-6, what="integer positions")
    centre = pos.at(torch.tensor([[0.5, 0.5]]))[0]
    assert_close(centre, table[[0, 1, 4, 5]].mean(0), atol=1e-6, what="centre of 4 cells")


@pytest.mark.parametrize("conv_stem", [False, True])
def test_coarse_patch_embedding_of_a_constant_image_equals_the_fine_one(conv_stem):
    embed = PatchEmbed(patch_size=4, width=16, conv_stem=conv_stem)
    flat = torch.full((1, 3, 32, 32), 0.3)
    fine = embed(flat)
    resizes = ["pixels"] if conv_stem else ["pixels", "weights"]
    # the conv stem zero-pads, so only tokens away from the border see a constant input
    inner = slice(1, 3) if conv_stem else slice(0, 4)
    for resize in resizes:
        coarse = embed(flat, factor=2, resize=resize)[..., inner, inner]
        expected = fine[..., 3:4, 3:4].expand_as(coarse)
        assert_close(coarse, expected, atol=1e-5, what=f"resize={resize}")


def test_same_seed_same_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        enc = build_encoder(ENCODERS["stvit"], 8, 32)
        outs.append(enc(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)))
    assert torch.equal(*outs)


def test_vit_encoder_is_a_plain_transformer_over_all_tokens():
    enc = ViTEncoder(latent_channels=8, image_size=32, patch_size=8, width=32, depth=2, num_heads=2)
    x = images()
    tokens = enc.embed(x)
    for block in enc.blocks:
        tokens = block(tokens)
    assert_close(enc(x), enc.to_grid(enc.head(tokens)), atol=0, what="forward")
    assert enc.last_stats["encoder_attention_tokens"] == 16


@pytest.mark.parametrize("kind", ["vit", "tome", "msvit", "quadtree", "stvit"])
def test_tiny_presets_build_each_encoder(kind):
    tok = artok.build_tokenizer(f"tiny-var-{kind}").eval()
    assert tok.config.encoder.kind == kind and type(tok.decoder) is ViTDecoder
    ids = tok.tokenize(images())
    assert tok.detokenize(ids).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", ["vit", "tome", "msvit", "quadtree", "stvit"])
@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_encoder_overfits_a_small_batch(name):
    """80 steps on 8 fixed smooth images: every encoder's tokenizer cuts its reconstruction error by 40%."""
    tok = tiny_tokenizer(ENCODERS[name]).train()
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    x = torch.nn.functional.interpolate(images(8, 4), size=(32, 32), mode="bilinear")  # smooth, learnable
    first = None
    for _ in range(80):
        out = tok(x)
        l1 = (out.reconstruction - x).abs().mean()
        first = first if first is not None else l1.item()
        opt.zero_grad()
        (l1 + sum(out.losses.values())).backward()
        opt.step()
    assert l1.item() < 0.6 * first, (first, l1.item())
