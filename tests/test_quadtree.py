"""Quadtree mixed-resolution tokens (Quadformer): tiling, budget, greedy splitting by saliency, scorers,
positions at patch centres, and the scatter back to the fine grid."""
import pytest
import torch

from artok.encoders.quadtree import QuadtreeLayout, QuadtreeViTEncoder, saliency_scores
from artok.encoders.vit import ViTEncoder
from conftest import assert_close

VIT = dict(latent_channels=8, image_size=32, patch_size=4, width=32, depth=2, num_heads=2)


def images(n=2):
    return torch.rand(n, 3, 32, 32) * 2 - 1


def coverage(boxes: torch.Tensor, size: int = 32) -> torch.Tensor:
    """How many patches cover each pixel: (size, size) per image."""
    counts = torch.zeros(boxes.shape[0], size, size, dtype=torch.long)
    for b in range(boxes.shape[0]):
        for row, col, side in boxes[b].tolist():
            counts[b, row:row + side, col:col + side] += 1
    return counts


@pytest.mark.parametrize("scorer", ["pixel_variance", "pixel_blur", "feature"])
@pytest.mark.parametrize("budget", [4, 9, 10, 30, 64, 100])
def test_patches_tile_the_image_exactly_within_the_budget(scorer, budget):
    enc = QuadtreeViTEncoder(**VIT, levels=2, token_budget=budget, scorer=scorer)
    x = images(3)
    boxes = enc.patches(x)
    n = boxes.shape[1]
    assert n <= budget and n == enc.num_tokens
    assert n == min(4 + 3 * ((budget - 4) // 3), 64)  # 4 roots of 16 px, +3 per split, at most 8x8 fine
    assert torch.equal(coverage(boxes), torch.ones(3, 32, 32, dtype=torch.long))
    assert set(boxes[..., 2].unique().tolist()) <= {4, 8, 16}


def test_detail_gets_the_small_patches():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 16:, :16] = torch.rand(1, 3, 16, 16) * 2 - 1  # texture in the bottom-left quadrant only
    enc = QuadtreeViTEncoder(**VIT, levels=2, token_budget=19, scorer="pixel_variance")  # 4 roots + 5 splits
    boxes = enc.patches(x)[0]
    small = boxes[boxes[:, 2] < 16]
    assert len(small) == 16 and (small[:, 2] == 4).all() and (small[:, 0] >= 16).all() and (small[:, 1] < 16).all()
    assert (boxes[boxes[:, 2] == 16][:, :2] != torch.tensor([16, 0])).any(1).all()


def test_greedy_split_takes_the_highest_scoring_splittable_leaf():
    layout = QuadtreeLayout(side=4, levels=2)  # 16 fine cells, 4 level-1 cells, 1 root
    scores = torch.zeros(1, layout.num_candidates)
    scores[0, 16:20] = torch.tensor([0.1, 0.9, 0.5, 0.3])
    scores[0, 20] = 1.0
    leaf = layout.split(scores, budget=7)  # root split, then the 0.9 cell
    chosen = leaf[0].nonzero().flatten().tolist()
    assert chosen == [2, 3, 6, 7, 16, 18, 19]


def test_gradient_free_split_and_positions_at_patch_centres():
    layout = QuadtreeLayout(side=8, levels=2)
    assert layout.centres[layout.level == 2].tolist() == [[1.5, 1.5], [1.5, 5.5], [5.5, 1.5], [5.5, 5.5]]
    assert layout.centres[layout.level == 1][1].tolist() == [0.5, 2.5]


def test_all_fine_budget_equals_the_plain_vit_encoder():
    vit = ViTEncoder(**VIT)
    quad = QuadtreeViTEncoder(**VIT, levels=2, token_budget=64)
    quad.load_state_dict(vit.state_dict())
    x = images()
    assert_close(quad(x), vit(x), atol=1e-5, what="all-fine quadtree vs ViT")


def test_each_patch_fills_the_fine_cells_it_covers():
    enc = QuadtreeViTEncoder(**VIT, levels=2, token_budget=10).eval()
    x = images(2)
    out = enc(x)
    assert out.shape == (2, 8, 8, 8) and enc.last_stats["encoder_attention_tokens"] == 10
    for b, patches in enumerate(enc.patches(x) // 4):
        for row, col, side in patches.tolist():
            cells = out[b, :, row:row + side, col:col + side].flatten(1)
            assert torch.equal(cells, cells[:, :1].expand_as(cells))
        assert torch.unique(out[b].flatten(1).T, dim=0).shape[0] == 10


def test_scorers():
    flat = torch.zeros(1, 3, 32, 32)
    ramp = torch.linspace(-1, 1, 32).expand(1, 3, 32, 32).contiguous()
    features = torch.zeros(1, 8, 8, 8)
    for scorer in ["pixel_variance", "pixel_blur", "feature"]:
        assert saliency_scores(scorer, flat, features, 4, 2).abs().max() == 0
    # a smooth ramp has pixel variance, but resizing a patch to 4x4 loses little of it
    variance = saliency_scores("pixel_variance", ramp, features, 4, 2)
    blur = saliency_scores("pixel_blur", ramp, features, 4, 2)
    assert (blur[0, 64:] < 0.1 * variance[0, 64:]).all()


def test_budget_below_the_roots_is_rejected():
    with pytest.raises(ValueError, match="token_budget 3"):
        QuadtreeViTEncoder(**VIT, levels=2, token_budget=3)
