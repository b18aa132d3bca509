"""Collective operations for statistics that must agree on every process.

Quantizers call these through a ``ProcessSync`` object instead of touching ``torch.distributed`` directly,
so model code stays free of process-group logic and runs unchanged on one process. Every collective here
is issued by all ranks in the same order (the callers guarantee that), which is what keeps multi-process
codebook training from desynchronising or hanging.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class ProcessSync:
    """All-reduce and broadcast over the default process group; identity when none is initialised."""

    @staticmethod
    def active() -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def world_size(self) -> int:
        return dist.get_world_size() if self.active() else 1

    def rank(self) -> int:
        return dist.get_rank() if self.active() else 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place; returns it."""
        if self.active():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` on every process with the copy held by ``src``, in place; returns it."""
        if self.active():
            dist.broadcast(tensor, src=src)
        return tensor


DEFAULT_SYNC = ProcessSync()
