"""The sampler's fast paths give what the plain ones give: the k-survivor nucleus equals top-k then top-p over
all V, the pre-allocated KV cache equals the growing one, and the guidance skip at the last scales is exact
where guidance has no effect."""
import pytest
import torch

from artok.models.attention import KVCache, LayerCache
from artok.sampling.logits import filter_logits


def two_pass_filter(logits, top_k, top_p):
    """VAR's filter written out: top-k over V, then the nucleus sorted over all V."""
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    logits = logits.masked_fill(logits < kth, -torch.inf)
    sorted_logits, order = logits.sort(dim=-1)
    remove = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), -torch.inf)


@pytest.mark.parametrize("top_k,top_p", [(900, 0.96), (20, 0.9), (1, 0.5), (4095, 0.3)])
def test_nucleus_among_survivors_equals_full_sort(top_k, top_p):
    torch.manual_seed(top_k)
    logits = torch.randn(3, 50, 4096) * 4
    fast = filter_logits(logits, top_k=top_k, top_p=top_p)
    assert torch.equal(torch.isinf(fast), torch.isinf(two_pass_filter(logits, top_k, top_p)))
    kept = ~torch.isinf(fast)
    assert torch.equal(fast[kept], logits[kept])
    assert (kept.sum(-1) >= 1).all() and (kept.sum(-1) <= top_k).all()


def test_static_cache_equals_growing_cache():
    grow, static = LayerCache(), LayerCache(capacity=10)
    for n in (1, 4, 5):
        k, v = torch.randn(2, 3, n, 8), torch.randn(2, 3, n, 8)
        a, b = grow.append(k, v), static.append(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert static.length == grow.length == 10
    with pytest.raises(ValueError, match="do not fit"):
        static.append(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8))


def test_kv_cache_capacity_reaches_every_layer():
    cache = KVCache(3, capacity=7)
    assert all(layer.capacity == 7 for layer in cache.layers) and cache.length == 0


# -- training-free acceleration ------------------------------------------------------------------------------
from artok.config import GeneratorConfig  # noqa: E402
from artok.models import Generator  # noqa: E402
from artok.sampling import Acceleration, generate  # noqa: E402
from artok.tokenizers import Tokenizer  # noqa: E402
from artok.pipeline import build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tok = build_tokenizer("tiny-var-vqvae").eval()
    def generator(width):
        cfg = GeneratorConfig(scales=tok.scales, codebook_size=tok.codebook_size, latent_channels=tok.latent_channels,
                              num_classes=4, depth=2, embed_dim=width, num_heads=2)
        return Generator(cfg).eval()
    return tok, generator(64), generator(32)


def run(pair, acceleration=None, cfg=2.0, model=None):
    tok, big, _ = pair
    rng = torch.Generator().manual_seed(3)
    return generate(model or big, tok, torch.tensor([0, 1, 2]), cfg_scale=cfg, top_k=5, generator=rng,
                    decode=False, acceleration=acceleration)


def test_no_acceleration_is_the_exact_sampler(pair):
    a, b = run(pair), run(pair, Acceleration())
    assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids))


def test_guidance_off_everywhere_equals_unguided_sampling(pair):
    K = len(pair[0].scales)
    off, unguided = run(pair, Acceleration(guidance_off_last=K)), run(pair, cfg=0.0)
    assert all(torch.equal(x, y) for x, y in zip(off.ids, unguided.ids))


def test_guidance_off_at_the_last_block_keeps_the_earlier_blocks(pair):
    exact, fast = run(pair), run(pair, Acceleration(guidance_off_last=1))
    assert all(torch.equal(x, y) for x, y in zip(exact.ids[:-1], fast.ids[:-1]))


def test_merging_changes_only_the_merged_blocks_and_ratio_zero_is_exact(pair):
    exact = run(pair)
    assert all(torch.equal(x, y) for x, y in zip(exact.ids, run(pair, Acceleration(merge_last=2, merge_ratio=0.0)).ids))
    merged = run(pair, Acceleration(merge_last=1, merge_ratio=0.5))
    assert all(torch.equal(x, y) for x, y in zip(exact.ids[:-1], merged.ids[:-1]))
    assert merged.ids[-1].shape == exact.ids[-1].shape


def test_draft_model_predicts_the_last_blocks(pair):
    tok, big, small = pair
    exact = run(pair)
    drafted = run(pair, Acceleration(draft=small, draft_last=2))
    assert all(torch.equal(x, y) for x, y in zip(exact.ids[:-2], drafted.ids[:-2]))
    # the drafted blocks are what the draft model itself samples after the big model's prefix
    rng = torch.Generator().manual_seed(3)
    own = generate(small, tok, torch.tensor([0, 1, 2]), cfg_scale=2.0, top_k=5, generator=rng, decode=False,
                   prefix=drafted.ids[:-2])
    assert all(torch.equal(x, y) for x, y in zip(own.ids, drafted.ids))
    K = len(tok.scales)
    assert sum(int(a.ne(b).sum()) for a, b in zip(exact.ids[K - 2:], drafted.ids[K - 2:])) > 0


def test_bad_acceleration_options_are_named(pair):
    tok, big, small = pair
    K = len(tok.scales)
    with pytest.raises(ValueError, match="guidance_off_last"):
        run(pair, Acceleration(guidance_off_last=K + 1))
    with pytest.raises(ValueError, match="merge_ratio"):
        run(pair, Acceleration(merge_last=1, merge_ratio=1.0))
    with pytest.raises(ValueError, match="draft model and draft_last"):
        run(pair, Acceleration(draft_last=1))
    other = Generator(GeneratorConfig(scales=tok.scales, codebook_size=tok.codebook_size,
                                      latent_channels=tok.latent_channels, num_classes=7, depth=1, embed_dim=32,
                                      num_heads=2)).eval()
    with pytest.raises(ValueError, match="num_classes"):
        run(pair, Acceleration(draft=other, draft_last=1))
