"""Token merging (ToMe): bipartite soft matching, size tracking, proportional attention, schedules, and the
ViT adapter that unmerges to the full grid."""
import pytest
import torch

from artok.encoders.token_merge import (TokenMergeViTEncoder, bipartite_soft_matching, merge_schedule,
                                        merge_weighted_average, proportional_attention_bias, tokens_per_layer)
from artok.encoders.vit import Attention, ViTEncoder
from conftest import assert_close

VIT = dict(latent_channels=8, image_size=32, patch_size=4, width=32, depth=3, num_heads=2)


def test_r_zero_is_the_identity():
    x = torch.randn(2, 10, 6)
    m = bipartite_soft_matching(torch.randn(2, 10, 4), 0)
    assert m.merge(x) is x and m.unmerge(x) is x
    assert torch.equal(m.destination, torch.arange(10).expand(2, 10))
    size = torch.ones(2, 10, 1)
    merged, merged_size = merge_weighted_average(m, x, size)
    assert merged is x and merged_size is size


def test_encoder_with_r_zero_equals_plain_vit():
    vit = ViTEncoder(**VIT)
    tome = TokenMergeViTEncoder(**VIT, merge_per_layer=0)
    tome.load_state_dict(vit.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(tome(x), vit(x))


def test_merge_removes_r_tokens_and_unmerge_restores_the_count():
    x = torch.randn(3, 11, 5)
    m = bipartite_soft_matching(torch.randn(3, 11, 4), 4)
    merged = m.merge(x)
    assert merged.shape == (3, 7, 5)
    restored = m.unmerge(merged)
    assert restored.shape == x.shape
    # tokens that were not merged come back unchanged; each merged group shares one value
    counts = torch.zeros(3, 7).scatter_add_(1, m.destination, torch.ones(3, 11))
    alone = counts.gather(1, m.destination) == 1
    assert torch.equal(restored[alone], x[alone])
    assert int((counts > 1).sum()) > 0 and counts.sum(1).eq(11).all()


def test_most_similar_pair_is_merged_by_size_weighted_average():
    # A = tokens 0, 2 ; B = tokens 1, 3. Token 2 points the same way as token 1: that edge must win.
    metric = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 2.0, 0.1], [0.6, 0.0, 0.8]]])
    x = torch.tensor([[[1.0], [2.0], [10.0], [4.0]]])
    size = torch.tensor([[[1.0], [3.0], [1.0], [1.0]]])
    m = bipartite_soft_matching(metric, 1)
    merged, merged_size = merge_weighted_average(m, x, size)
    # order: unmerged A tokens (token 0), then B tokens (1 ⊕ 2, 3)
    assert_close(merged, torch.tensor([[[1.0], [(3 * 2.0 + 10.0) / 4], [4.0]]]), what="merged values")
    assert torch.equal(merged_size, torch.tensor([[[1.0], [4.0], [1.0]]]))
    assert m.destination.tolist() == [[0, 1, 1, 2]]


def test_merged_sizes_sum_to_the_token_count_over_layers():
    B, N = 2, 64
    x, size = torch.randn(B, N, 8), torch.ones(B, N, 1)
    destination = torch.arange(N).expand(B, N)
    for r in merge_schedule(N, 6, 9, "constant"):
        m = bipartite_soft_matching(torch.randn(B, x.shape[1], 4), r)
        x, size = merge_weighted_average(m, x, size)
        destination = m.destination.gather(1, destination)
        assert torch.equal(size.sum((1, 2)), torch.full((B,), float(N)))
    # each merged token's size is the number of original tokens mapped to it
    counts = torch.zeros(B, x.shape[1]).scatter_add_(1, destination, torch.ones(B, N))
    assert torch.equal(counts, size[..., 0])
    assert x.shape[1] == N - 6 * 9


def test_proportional_attention_equals_plain_attention_when_sizes_are_one():
    attn = Attention(16, 2)
    x = torch.randn(2, 9, 16)
    bias = proportional_attention_bias(torch.ones(2, 9, 1))
    assert torch.equal(bias, torch.zeros(2, 1, 1, 9))
    assert_close(attn(x, bias=bias), attn(x), atol=1e-6, what="size-1 proportional attention")


def test_proportional_attention_counts_a_token_of_size_s_as_s_copies():
    attn = Attention(16, 2)
    x = torch.randn(1, 5, 16)
    duplicated = torch.cat([x, x[:, 2:3].expand(-1, 2, -1)], dim=1)  # token 2 three times
    size = torch.tensor([[1.0, 1.0, 3.0, 1.0, 1.0]])[..., None]
    out = attn(x, bias=proportional_attention_bias(size))
    assert_close(out, attn(duplicated)[:, :5], atol=1e-5, what="size 3 vs three copies")


def test_schedules():
    assert merge_schedule(64, 4, 8, "constant") == [8, 8, 8, 8]
    decreasing = merge_schedule(64, 5, 8, "decreasing")
    assert decreasing == [16, 12, 8, 4, 0] and sum(decreasing) == 5 * 8
    assert merge_schedule(16, 4, 8, "constant") == [8, 4, 2, 1]  # clamped to half the tokens left
    assert tokens_per_layer(16, [8, 4, 2, 1]) == [16, 8, 4, 2]
    with pytest.raises(ValueError, match="'linear'"):
        merge_schedule(16, 4, 2, "linear")


def test_encoder_unmerges_to_the_grid_with_one_value_per_merged_token():
    enc = TokenMergeViTEncoder(**VIT, merge_per_layer=10).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    f = enc(x)
    assert f.shape == (2, 8, 8, 8)
    kept = 64 - sum(enc.schedule)
    for b in range(2):
        assert torch.unique(f[b].flatten(1).T, dim=0).shape[0] == kept
    assert enc.last_stats["encoder_merged_tokens"] == sum(enc.schedule) == 30
    assert enc.last_stats["encoder_attention_tokens"] == sum(tokens_per_layer(64, enc.schedule)) / 3


def test_gradients_reach_every_encoder_parameter():
    enc = TokenMergeViTEncoder(**VIT, merge_per_layer=8, schedule="decreasing")
    enc(torch.rand(2, 3, 32, 32) * 2 - 1).square().mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
