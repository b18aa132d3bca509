"""Exponential moving average of model weights (Polyak averaging), kept as a full shadow module."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow ← d·shadow + (1 − d)·model after every optimizer step, with d = min(decay, (1+n)/(10+n)).

    The warm-up term keeps the average from being dominated by the random initialisation early on.
    Floating-point parameters are averaged; buffers (codebook usage statistics, norms) are copied, since
    they are statistics, not weights. ``state_dict``/``load_state_dict`` make it checkpointable with
    ``accelerator.register_for_checkpointing``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        params = dict(model.named_parameters())
        for name, shadow in self.shadow.named_parameters():
            source = params[name].detach()
            if shadow.dtype.is_floating_point:
                shadow.lerp_(source.to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(source)
        buffers = dict(model.named_buffers())
        for name, shadow in self.shadow.named_buffers():
            shadow.copy_(buffers[name])
        self.num_updates += 1

    def to(self, device) -> "EMA":
        self.shadow.to(device)
        return self

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"], strict=True)
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
