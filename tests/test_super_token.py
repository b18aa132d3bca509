"""Super tokens (STViT): local soft association, super-token update and token upsampling, checked against a
dense reference, and the encoder that attends over super tokens only."""
import math

import pytest
import torch

from artok.encoders.super_token import (SuperTokenViTEncoder, sample_super_tokens, super_token_association,
                                        update_super_tokens, upsample_tokens)
from conftest import assert_close

VIT = dict(latent_channels=8, image_size=32, patch_size=4, width=32, depth=2, num_heads=2)


def dense_association(tokens: torch.Tensor, super_tokens: torch.Tensor, size: int) -> torch.Tensor:
    """Reference: (B, N, M) association over the whole super-token grid, restricted by a loop to the 3×3
    super tokens around each token's region."""
    B, D, h, w = tokens.shape
    hs, ws = super_tokens.shape[-2:]
    x = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
    s = super_tokens.flatten(2).transpose(1, 2)  # (B, M, D)
    logits = x @ s.transpose(1, 2) / math.sqrt(D)
    allowed = torch.zeros(h * w, hs * ws, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            for a in range(hs):
                for b in range(ws):
                    allowed[i * w + j, a * ws + b] = abs(a - i // size) <= 1 and abs(b - j // size) <= 1
    return logits.masked_fill(~allowed, -torch.inf).softmax(-1)


def to_dense(association: torch.Tensor, h: int, w: int, size: int) -> torch.Tensor:
    """(B, n, m, 9) local association → (B, N, M) over the grids, by placing each of the 9 neighbours."""
    B = association.shape[0]
    hs, ws = h // size, w // size
    dense = torch.zeros(B, h * w, hs * ws)
    for region in range(hs * ws):
        ry, rx = divmod(region, ws)
        for m in range(size * size):
            i, j = ry * size + m // size, rx * size + m % size
            for k in range(9):
                a, b = ry + k // 3 - 1, rx + k % 3 - 1
                if 0 <= a < hs and 0 <= b < ws:
                    dense[:, i * w + j, a * ws + b] = association[:, region, m, k]
    return dense


def test_association_rows_sum_to_one_and_vanish_outside_the_grid():
    tokens = torch.randn(2, 16, 8, 8)
    q = super_token_association(tokens, torch.nn.functional.avg_pool2d(tokens, 2), 2)
    assert q.shape == (2, 16, 4, 9)
    assert_close(q.sum(-1), torch.ones(2, 16, 4), atol=1e-6, what="row sums")
    # region 0 is the top-left corner: neighbours above or left of it lie outside the grid
    assert torch.equal(q[:, 0, :, [0, 1, 2, 3, 6]], torch.zeros(2, 4, 5))
    assert (q[:, 5] > 0).all()  # an interior region sees all 9


@pytest.mark.parametrize("size", [2, 4])
def test_local_association_matches_the_dense_reference(size):
    tokens = torch.randn(1, 8, 8, 8)
    super_tokens = torch.randn(1, 8, 8 // size, 8 // size)
    q = super_token_association(tokens, super_tokens, size)
    assert_close(to_dense(q, 8, 8, size), dense_association(tokens, super_tokens, size), atol=1e-6,
                 what="local vs dense association")


def test_update_and_upsample_match_the_dense_formulas():
    size = 2
    tokens = torch.randn(2, 8, 8, 8)
    q = super_token_association(tokens, torch.nn.functional.avg_pool2d(tokens, size), size)
    dense = to_dense(q, 8, 8, size)  # (B, N, M)
    x = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
    expected = (dense.transpose(1, 2) @ x) / dense.sum(1)[..., None]  # column-normalised Qᵀ X
    updated = update_super_tokens(tokens, q, size)
    assert_close(updated.flatten(2).transpose(1, 2), expected, atol=1e-5, what="super-token update")
    upsampled = upsample_tokens(q, updated, size)
    assert_close(upsampled.flatten(2).transpose(1, 2), dense @ expected, atol=1e-5, what="upsampling Q S")


def test_uniform_tokens_give_uniform_super_tokens():
    tokens = torch.randn(1, 8, 1, 1).expand(1, 8, 8, 8).contiguous()
    super_tokens, q = sample_super_tokens(tokens, 2, iterations=3)
    assert_close(super_tokens, tokens[..., :4, :4], atol=1e-5, what="super tokens of a constant map")
    assert_close(upsample_tokens(q, super_tokens, 2), tokens, atol=1e-5, what="upsampled constant map")


def test_encoder_attends_over_super_tokens_only():
    enc = SuperTokenViTEncoder(**VIT, super_token_size=2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    f = enc(x)
    assert f.shape == (2, 8, 8, 8)
    assert enc.last_stats["encoder_attention_tokens"] == 16
    f.square().mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_grid_not_divisible_by_super_token_size_is_rejected():
    with pytest.raises(ValueError, match="super_token_size 3"):
        SuperTokenViTEncoder(**VIT, super_token_size=3)
