"""Semantic-token encoders: Visual Transformer (filter and recurrent tokenizers, projector), TokenLearner +
TokenFuser, Context Clusters. Their defining formulas, checked on hand-made inputs, and each encoder inside
every quantizer kind (tiny configs, CPU)."""
import math

import pytest
import torch

import artok
from artok.cli import main as cli
from artok.config import ConfigError, QuantizerConfig, TokenizerConfig
from artok.config.encoders import (ContextClusterEncoderConfig, TokenLearnerEncoderConfig,
                                   VisualTransformerEncoderConfig)
from artok.data import TokenDataset
from artok.encoders import (ContextClusterEncoder, TokenLearnerEncoder, ViTDecoder, VisualTransformerEncoder,
                            build_encoder)
from artok.encoders.context_cluster import (ContextCluster, aggregate, assign_to_centres, dispatch,
                                            point_coordinates)
from artok.encoders.token_learner import TokenFuser, TokenLearner, learn_tokens
from artok.encoders.visual_transformer import (FilterTokenizer, Projector, RecurrentTokenizer, pool_tokens,
                                               token_weights)
from conftest import assert_close

TINY = dict(patch_size=8, width=32, depth=2, num_heads=2)
ENCODERS = {
    "vt": VisualTransformerEncoderConfig(**TINY, num_tokens=4),
    "vt-filter": VisualTransformerEncoderConfig(**TINY, num_tokens=3, recurrent=False, positions="learned"),
    "tokenlearner": TokenLearnerEncoderConfig(**TINY, num_tokens=4, learner_position=1),
    "tokenlearner-first": TokenLearnerEncoderConfig(**TINY, num_tokens=5, learner_position=0),
    "coc": ContextClusterEncoderConfig(**TINY, region_size=2, centres_per_side=1),
    "coc-global": ContextClusterEncoderConfig(**TINY, region_size=4, centres_per_side=2, conv_stem=True),
}
QUANTIZERS = {"vq": (4,), "msrq": (1, 2, 4), "hybrid": (1, 2, 4)}
ENCODER_ARGS = dict(latent_channels=8, image_size=32, patch_size=4, width=16, depth=3, num_heads=2)


def tokenizer(encoder, quantizer="msrq"):
    scales = QUANTIZERS[quantizer]
    return artok.build_tokenizer(TokenizerConfig(
        image_size=32, latent_channels=8, encoder=encoder,
        quantizer=QuantizerConfig(kind=quantizer, codebook_size=64, scales=scales,
                                  share_quant_resi=len(scales) if quantizer != "vq" else 4)))


def images(n=2, size=32):
    return torch.rand(n, 3, size, size) * 2 - 1


def no_gradient(module):
    return [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


# ---------------------------------------------------------------------------------------------------------
# Acceptance: every encoder inside every quantizer kind
# ---------------------------------------------------------------------------------------------------------

# the three kinds in every quantizer; their variants (static filters, learner first, one global region with a
# conv stem) in the multi-scale one
CASES = [(name, q) for name in ("vt", "tokenlearner", "coc") for q in sorted(QUANTIZERS)] + [
    (name, "msrq") for name in ("vt-filter", "tokenlearner-first", "coc-global")]


@pytest.mark.parametrize("name, quantizer", CASES)
def test_encoder_trains_tokenizes_and_detokenizes_in_every_quantizer(name, quantizer):
    tok = tokenizer(ENCODERS[name], quantizer).train()
    assert type(tok.decoder) is ViTDecoder
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    x = images(3)
    for _ in range(2):
        out = tok(x)
        loss = (out.reconstruction - x).abs().mean() + sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        assert not no_gradient(tok), f"{name}/{quantizer}: missing or non-finite gradient in {no_gradient(tok)}"
        opt.step()
    assert torch.isfinite(loss) and "encoder_attention_tokens" in out.stats
    tok.eval()
    ids = tok.tokenize(x)
    assert [i.shape for i in ids] == [(3, s * s) for s in QUANTIZERS[quantizer]]
    assert all(int(i.min()) >= 0 and int(i.max()) < 64 for i in ids)
    with torch.no_grad():
        if quantizer == "hybrid":
            rec = tok.detokenize(ids, residual=tok.residual(x))
            expected = tok(x, skip_continuous_prob=0.0).reconstruction
        else:
            rec, expected = tok.detokenize(ids), tok(x).reconstruction
    assert rec.shape == x.shape and rec.min() >= -1 and rec.max() <= 1
    assert_close(rec, expected.clamp(-1, 1), atol=1e-5, what=f"{name}/{quantizer} detokenize")


@pytest.mark.parametrize("kind", ["vt", "tokenlearner", "coc"])
def test_tiny_presets_build_and_round_trip(kind, tmp_path):
    tok = artok.build_tokenizer(f"tiny-var-{kind}").eval()
    assert tok.config.encoder.kind == kind
    assert TokenizerConfig.from_yaml(tok.config.to_yaml()) == tok.config
    tok.save_pretrained(tmp_path / "tok")
    loaded = artok.from_pretrained(tmp_path / "tok")
    assert type(loaded.encoder) is type(tok.encoder)
    x = images()
    with torch.no_grad():
        ids = tok.tokenize(x)
        assert all(torch.equal(a, b) for a, b in zip(ids, loaded.tokenize(x)))
        assert torch.equal(tok.detokenize(ids), loaded.detokenize(ids))


def test_same_seed_same_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        enc = build_encoder(ENCODERS["coc"], 8, 32)
        outs.append(enc(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)))
    assert torch.equal(*outs)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vt", "tokenlearner", "coc"])
def test_cli_trains_a_preset_and_encodes_a_dataset_with_it(kind, tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    config = tmp_path / "train.yaml"
    config.write_text(f"tokenizer: tiny-var-{kind}\ndata: {{source: procedural, num_samples: 16, num_workers: 0}}\n"
                      "loss: {perceptual_weight: 0.0, gan_weight: 0.0}\n"
                      "train: {batch_size: 4, max_steps: 2, warmup_steps: 0, eval_images: 4, log_every: 1, "
                      "sample_every: 100, save_every: 100}\n")
    try:
        assert cli(["train", "tokenizer", "--config", str(config), "--out-dir", str(tmp_path / "run"),
                    "--no-progress"]) == 0
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    tok = artok.from_pretrained(tmp_path / "run" / "tokenizer")
    assert tok.config.encoder.kind == kind
    assert cli(["encode", str(tmp_path / "run" / "tokenizer"), "--data", "procedural", "--num-samples", "6",
                "--out", str(tmp_path / "ids"), "--num-workers", "0", "--batch-size", "4", "--cpu"]) == 0
    shards = TokenDataset(tmp_path / "ids")
    assert len(shards) == 6 and [len(i) for i in shards[5].ids] == [1, 4, 16]
    assert tok.detokenize([i[None] for i in shards[5].ids]).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------
# Visual Transformer
# ---------------------------------------------------------------------------------------------------------

def test_vt_token_weights_sum_to_one_over_pixels_and_tokens_average_them():
    pixels, filters = torch.randn(2, 20, 6), torch.randn(5, 6)
    weights = token_weights(pixels, filters)
    assert weights.shape == (2, 20, 5) and (weights > 0).all()
    assert_close(weights.sum(1), torch.ones(2, 5), atol=1e-6, what="token weights over pixels")
    tokens = pool_tokens(weights, pixels)
    expected = torch.stack([torch.stack([(weights[b, :, l, None] * pixels[b]).sum(0) for l in range(5)])
                            for b in range(2)])
    assert_close(tokens, expected, atol=1e-6, what="T = A^T X")
    # a weighted average stays inside the pixels' range, channel by channel
    assert (tokens <= pixels.amax(1, keepdim=True) + 1e-6).all()
    assert (tokens >= pixels.amin(1, keepdim=True) - 1e-6).all()


def test_vt_tokenizers_filter_based_and_recurrent():
    pixels = torch.randn(2, 16, 8)
    filtering = FilterTokenizer(8, 3)
    tokens, weights = filtering(pixels)
    assert_close(weights, (pixels @ filtering.filters.weight.T).softmax(1), atol=1e-6, what="softmax_N(X W_A)")
    recurrent = RecurrentTokenizer(8)
    _, a = recurrent(pixels, tokens)
    _, b = recurrent(pixels, tokens.flip(1))  # the previous tokens set the filters, one per token
    assert_close(b, a.flip(-1), atol=1e-6, what="filters follow the previous tokens")
    assert_close(a, (pixels @ recurrent.token_to_filter(tokens).transpose(1, 2)).softmax(1), atol=1e-6,
                 what="softmax_N(X (T_in W_T->R)^T)")
    assert_close(a.sum(1), torch.ones(2, 3), atol=1e-6, what="recurrent weights over pixels")


def test_vt_projector_with_zero_value_path_reproduces_the_input():
    projector = Projector(8)
    pixels, tokens = torch.randn(2, 16, 8), torch.randn(2, 4, 8)
    assert not torch.allclose(projector(pixels, tokens), pixels)
    with torch.no_grad():
        projector.value.weight.zero_()
        projector.value.bias.zero_()
    assert torch.equal(projector(pixels, tokens), pixels)
    assert_close(projector.last_attention.sum(-1), torch.ones(2, 16), atol=1e-6, what="softmax over L")


def test_vt_projector_equals_the_formula():
    projector = Projector(8)
    pixels, tokens = torch.randn(1, 6, 8), torch.randn(1, 3, 8)
    q, k, v = projector.query(pixels), projector.key(tokens), projector.value(tokens)
    expected = pixels + ((q @ k.transpose(1, 2)) / math.sqrt(8)).softmax(-1) @ v
    assert_close(projector(pixels, tokens), expected, atol=1e-6, what="X_in + softmax_L(QK^T) T W_V")


def test_vt_encoder_layers_and_attention_tokens():
    enc = VisualTransformerEncoder(**ENCODER_ARGS, num_tokens=6, recurrent=True)
    kinds = [type(layer.tokenizer) for layer in enc.layers]
    assert kinds == [FilterTokenizer, RecurrentTokenizer, RecurrentTokenizer]
    static = VisualTransformerEncoder(**ENCODER_ARGS, num_tokens=6, recurrent=False)
    assert all(type(layer.tokenizer) is FilterTokenizer for layer in static.layers)
    f = enc(images())
    assert f.shape == (2, 8, 8, 8) and enc.last_stats["encoder_attention_tokens"] == 6
    assert enc.last_assignment.shape == (2, 64) and int(enc.last_assignment.max()) < 6


# ---------------------------------------------------------------------------------------------------------
# TokenLearner + TokenFuser
# ---------------------------------------------------------------------------------------------------------

def test_tokenlearner_tokens_are_the_bounded_combination_of_the_pixels():
    learner = TokenLearner(8, 5, grid_size=4)
    x = torch.randn(2, 16, 8)
    tokens, maps = learner(x)
    assert tokens.shape == (2, 5, 8) and maps.shape == (2, 16, 5)
    assert (maps > 0).all() and (maps < 1).all()
    expected = torch.stack([torch.stack([(maps[b, :, s, None] * x[b]).mean(0) for s in range(5)]) for b in range(2)])
    assert_close(tokens, expected, atol=1e-6, what="z_i = mean_p alpha_i(p) x_p")
    # coefficients alpha/N lie in (0, 1/N) and sum to less than 1: |z| stays below the mean |x|
    assert (tokens.abs() <= x.abs().mean(1, keepdim=True) + 1e-6).all()
    assert_close(learn_tokens(torch.ones(2, 16, 5), x), x.mean(1, keepdim=True).expand(-1, 5, -1), atol=1e-6,
                 what="alpha = 1 is the spatial mean")


def test_tokenlearner_saturated_branches_pool_the_mean():
    learner = TokenLearner(8, 3, grid_size=4)
    with torch.no_grad():
        learner.attention[-1].weight.zero_()
        learner.attention[-1].bias.fill_(30.0)  # sigmoid(30) = 1 in float32
    x = torch.randn(2, 16, 8)
    tokens, _ = learner(x)
    assert_close(tokens, x.mean(1, keepdim=True).expand(-1, 3, -1), atol=1e-6, what="saturated maps")


def test_tokenfuser_mixes_tokens_and_adds_them_back_with_grid_weights():
    fuser = TokenFuser(8, 4, mlp_ratio=2.0)
    tokens, grid = torch.randn(2, 4, 8), torch.randn(2, 16, 8)
    out = fuser(tokens, grid)
    beta = fuser.last_weights
    assert beta.shape == (2, 16, 4) and (beta > 0).all() and (beta < 1).all()
    mixed = torch.einsum("ts,bsd->btd", fuser.mix.weight, fuser.norm(tokens)) + fuser.mix.bias[:, None]
    assert_close(out, grid + beta @ mixed, atol=1e-5, what="X + beta (W over tokens) Y")
    # the weights come from the grid alone: changing the tokens leaves them, changing the grid does not
    fuser(tokens * 2, grid)
    assert torch.equal(fuser.last_weights, beta)
    fuser(tokens, grid + 1)
    assert not torch.equal(fuser.last_weights, beta)


def test_tokenlearner_encoder_counts_tokens_and_reaches_every_parameter():
    enc = TokenLearnerEncoder(**ENCODER_ARGS, num_tokens=4, learner_position=1)
    f = enc(images())
    assert f.shape == (2, 8, 8, 8)
    assert enc.last_stats["encoder_attention_tokens"] == pytest.approx((64 + 4 + 4) / 3)
    f.square().mean().backward()
    assert not no_gradient(enc), no_gradient(enc)


# ---------------------------------------------------------------------------------------------------------
# Context Clusters
# ---------------------------------------------------------------------------------------------------------

def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_coc_aggregation_and_dispatch_on_three_points_by_hand():
    # features: p1 = (1, 0), p2 = (0, 1), p3 = (2, 1); centres c1 = (1, 0), c2 = (0, 1)
    points = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]])
    centres = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    similarity, assignment = assign_to_centres(points, centres)
    # cos(p3, c1) = 2/sqrt(5) beats cos(p3, c2) = 1/sqrt(5): clusters {p1, p3} and {p2}
    assert torch.equal(assignment, torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]))
    assert_close(similarity, torch.tensor([[1.0, 1.0, 2 / math.sqrt(5)]]), atol=1e-6, what="s_i")
    alpha, beta = 2.0, -1.0
    gates = torch.sigmoid(alpha * similarity + beta)
    values = torch.tensor([[[1.0], [2.0], [4.0]]])
    centre_values = torch.tensor([[[0.5], [3.0]]])
    g = aggregate(values, centre_values, gates, assignment)
    s1, s2, s3 = sigmoid(2 * 1 - 1), sigmoid(2 * 1 - 1), sigmoid(2 * 2 / math.sqrt(5) - 1)
    g1 = (0.5 + s1 * 1.0 + s3 * 4.0) / (1 + s1 + s3)
    g2 = (3.0 + s2 * 2.0) / (1 + s2)
    assert_close(g, torch.tensor([[[g1], [g2]]]), atol=1e-6, what="g = (v_c + sum s v) / (1 + sum s)")
    assert_close(dispatch(g, gates, assignment), torch.tensor([[[s1 * g1], [s2 * g2], [s3 * g1]]]), atol=1e-6,
                 what="sig(alpha s + beta) g_c(i)")


def test_coc_each_point_belongs_to_exactly_one_cluster_its_most_similar_centre():
    points, centres = torch.randn(6, 16, 4), torch.randn(6, 4, 4)
    similarity, assignment = assign_to_centres(points, centres)
    assert torch.equal(assignment.sum(1), torch.ones(6, 16))
    cosine = torch.nn.functional.cosine_similarity(points[:, None], centres[:, :, None], dim=-1)  # (6, 4, 16)
    assert torch.equal(assignment.argmax(1), cosine.argmax(1))
    assert_close(similarity, cosine.amax(1), atol=1e-6, what="similarity to the chosen centre")


def test_coc_clustering_stays_inside_its_local_region():
    cluster = ContextCluster(8, 2, grid_size=8, region_size=4, centres_per_side=2)
    x = torch.randn(1, 64, 8)
    moved = x.clone()
    moved[0, 0] += 5.0  # point (0, 0): in the top-left region
    a, b = cluster(x).reshape(8, 8, 8), cluster(moved).reshape(8, 8, 8)
    assert not torch.allclose(a[:4, :4], b[:4, :4])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[:4, :4] = False
    assert torch.equal(a[outside], b[outside])
    assignment = cluster.last_assignment  # (heads·regions, 16): 4 centres per region
    assert assignment.shape == (2 * 4, 16) and int(assignment.max()) < 4


def test_coc_points_carry_normalised_coordinates_and_no_position_embedding():
    points = point_coordinates(torch.zeros(1, 3, 4, 8))
    assert_close(points[0, 3, 0], torch.arange(8) / 8 - 0.5, what="x = j/W - 0.5")
    assert_close(points[0, 4, :, 0], torch.arange(4) / 4 - 0.5, what="y = i/H - 0.5")
    enc = ContextClusterEncoder(**ENCODER_ARGS, region_size=4, centres_per_side=2)
    assert enc.pos_embed is None and enc.patch_embed.proj.in_channels == 5
    enc(images())
    assert enc.last_stats["encoder_attention_tokens"] == 16  # 4 regions x 4 centres
    assignment = enc.last_assignment  # (B, N) global cluster of every point
    assert assignment.shape == (2, 64) and set(assignment.unique().tolist()) <= set(range(16))
    # a cluster never spans two regions
    regions = torch.arange(64).reshape(8, 8) // 4 % 2 + 2 * (torch.arange(64).reshape(8, 8) // 32)
    assert torch.equal(assignment // 4, regions.flatten().expand(2, -1))


# ---------------------------------------------------------------------------------------------------------
# Bad configs
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, values, message", [
    (VisualTransformerEncoderConfig, {"num_tokens": 0}, r"num_tokens \(L\) must be >= 1"),
    (TokenLearnerEncoderConfig, {"num_tokens": 0}, r"num_tokens \(S\) must be >= 1"),
    (TokenLearnerEncoderConfig, {"depth": 2, "learner_position": 2}, "learner_position must be in 0..depth-1"),
    (ContextClusterEncoderConfig, {"region_size": 0}, "region_size must be >= 1"),
    (ContextClusterEncoderConfig, {"region_size": 4, "centres_per_side": 3}, "centres_per_side"),
])
def test_bad_config_values_name_the_problem(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls(**values)


@pytest.mark.parametrize("encoder, message", [
    (VisualTransformerEncoderConfig(**TINY, num_tokens=17), "num_tokens L=17 must be between 1 and the 16 cells"),
    (ContextClusterEncoderConfig(**TINY, region_size=3, centres_per_side=1), "not divisible into regions of "
                                                                             "region_size 3"),
])
def test_grid_dependent_errors_surface_when_building(encoder, message):
    with pytest.raises(ConfigError, match=message):
        tokenizer(encoder)


def test_unknown_key_suggests_the_field():
    with pytest.raises(ConfigError, match="did you mean 'centres_per_side'"):
        TokenizerConfig.from_dict({"encoder": {"kind": "coc", "centers_per_side": 2}})
