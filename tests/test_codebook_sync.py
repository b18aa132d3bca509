"""Under several processes, codebook statistics are all-reduced so every process holds the same codebook."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from artok.quantizers import MultiScaleResidualQuantizer, VectorQuantizer


def _worker(rank: int, world: int, init_file: str, out_dir: str, kind: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical initial weights, as DDP's initial broadcast gives
        if kind.startswith("msrq"):
            q = MultiScaleResidualQuantizer(codebook_size=32, dim=4, scales=(1, 2, 4), ema_decay=0.9,
                                            dead_code_threshold=0.5, scale_norm=kind == "msrq-scale-norm",
                                            prefix_dropout=0.5 if kind == "msrq-scale-norm" else 0.0)
        else:
            q = VectorQuantizer(codebook_size=32, dim=4, scales=(4,), ema_decay=0.9, dead_code_threshold=0.5)
        q.train()
        torch.manual_seed(100 + rank)  # different data and restart draws on each process
        for _ in range(5):
            q(torch.randn(3, 4, 4, 4) * (1 + rank))
        torch.save({"weight": q.codebook.weight.detach(), "usage": q.codebook.usage,
                    "ema_count": q.codebook.ema_count, "restarted": q.codebook.restarted_last_update,
                    "scale_std": getattr(q, "scale_std", torch.ones(1)),
                    "scale_mean": getattr(q, "scale_mean", torch.ones(1))},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["msrq", "vq", "msrq-scale-norm"])
@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_two_processes_hold_identical_codebooks(tmp_path, kind):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), kind), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for key in ("weight", "usage", "ema_count", "scale_std", "scale_mean"):
        assert torch.equal(a[key], b[key]), f"{key} differs between processes"
    assert a["usage"].sum() > 0
    if kind == "msrq-scale-norm":
        assert not torch.equal(a["scale_std"], torch.ones(3)), "the per-scale statistics were never updated"


def test_single_process_statistics_differ_with_data():
    """Sanity check of the test above: without the all-reduce, different data gives different codebooks."""
    results = []
    for rank in range(2):
        torch.manual_seed(0)
        q = VectorQuantizer(codebook_size=32, dim=4, scales=(4,), ema_decay=0.9, dead_code_threshold=0.5).train()
        torch.manual_seed(100 + rank)
        for _ in range(5):
            q(torch.randn(3, 4, 4, 4) * (1 + rank))
        results.append(q.codebook.weight.detach().clone())
    assert not torch.equal(*results)
