"""Exponential moving average of model weights (Polyak averaging), kept as a full shadow module: ``ema-pytorch``.

Why ``ema-pytorch`` and not diffusers' ``EMAModel`` (diffusers is already a dependency) or
``torch.optim.swa_utils.AveragedModel``: ``import diffusers.training_utils`` imports ``diffusers.models`` and,
when installed, ``transformers`` — measured +7.2 s at the start of every training process on this project's
shared 2-core machine, where ``artok.training.run`` alone imports in 2.7 s — and ``EMAModel`` holds bare
tensors, not a module with its buffers; ``AveragedModel`` has no warm-up and leaves buffers alone, so both
would need the hand-written parts back. ``ema-pytorch`` keeps a shadow module, its buffers, the step count
and the warm-up itself; only integer buffers (which it skips) are copied here.
"""
from __future__ import annotations

import torch
from ema_pytorch import EMA as EmaPytorch
from torch import nn


class EMA:
    """shadow ← d·shadow + (1 − d)·model after every optimizer step, d = min(decay, (1+n)/(10+n)) after n
    earlier updates; the first update copies the model (n = 0 would keep a tenth of the random initialisation).

    The warm-up keeps the average from being dominated by the early, fast-moving weights (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``). ``ema-pytorch`` computes its decay as
    1 − (1 + e/γ)^−p with e = step − update_after_step − 1; γ = 9, p = 1 and ``update_after_step = -1`` make
    that (1+n)/(10+n). Floating-point parameters are averaged; buffers (codebook usage statistics, EMA
    codebook sums, counters) are copied, since they are statistics, not weights. ``state_dict``/
    ``load_state_dict`` make it checkpointable with ``accelerator.register_for_checkpointing``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = model
        buffers = {name for name, _ in model.named_buffers()}
        self.average = EmaPytorch(model, beta=decay, update_after_step=-1, update_every=1, inv_gamma=9.0, power=1.0,
                                  include_online_model=False, param_or_buffer_names_no_ema=buffers)
        self.shadow = self.average.ema_model.eval().requires_grad_(False)
        # ema-pytorch tracks floating-point tensors only; integer buffers (update counters) are copied here
        self._integer_buffers = [name for name, b in model.named_buffers() if not b.dtype.is_floating_point]

    @property
    def decay(self) -> float:
        return float(self.average.beta)

    @property
    def num_updates(self) -> int:
        return int(self.average.step)

    @torch.no_grad()
    def update(self) -> None:
        """One optimizer step's update from the tracked model."""
        self.average.update()
        if self._integer_buffers:
            source, shadow = dict(self.model.named_buffers()), dict(self.shadow.named_buffers())
            for name in self._integer_buffers:
                shadow[name].copy_(source[name])

    def to(self, device) -> "EMA":
        self.shadow.to(device)  # the step counters stay on the CPU: no device sync at each update
        return self

    def state_dict(self) -> dict:
        return {"average": self.average.state_dict(), "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.average.beta = float(state["decay"])
        if "shadow" in state:  # written by artok's own EMA (before ema-pytorch): the same average, continued
            n = int(state["num_updates"])
            state = {"average": {"initted": torch.tensor(n > 0), "step": torch.tensor(n),
                                 **{f"ema_model.{k}": v for k, v in state["shadow"].items()}}}
        self.average.load_state_dict(state["average"], strict=True)
