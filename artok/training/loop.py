"""Step functions of tokenizer training, free of I/O so tests can run them on CPU, and the step bookkeeping
both trainers share (``StepClock``).

``gan_step`` is one micro-step: the tokenizer (generator) update, then, once the adversarial loss is on,
the discriminator update. Both optimizers are prepared by Accelerate, so gradient accumulation, mixed
precision and DDP are handled the same way for both.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from artok.training.checkpoint import save_checkpoint


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Temporarily stop gradients into ``module`` (the discriminator during the generator update), so the
    generator's backward leaves no stale gradients in it."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gan_step(accelerator, model, discriminator, optimizer, discriminator_optimizer, scheduler,
             discriminator_scheduler, loss_fn, images: torch.Tensor, *, step: int,
             grad_clip: float | None) -> dict[str, torch.Tensor]:
    """One micro-step of tokenizer training; returns detached named scalars for logging.

    images: (B, 3, H, W) in [-1, 1]. ``step`` is the number of optimizer steps done so far (it switches the
    adversarial loss on at ``loss.gan_start_step``). Clipping happens only when gradients are synchronised
    (the last micro-step of an accumulation), as Accelerate requires.
    """
    tokenizer = accelerator.unwrap_model(model)
    critic = accelerator.unwrap_model(discriminator) if discriminator is not None else None
    use_gan = critic is not None and loss_fn.gan_active(step)
    models = (model, discriminator) if discriminator is not None else (model,)
    with accelerator.accumulate(*models):
        output = model(images)
        with frozen(critic):
            loss, logs = loss_fn.generator_loss(output, images, step=step, tokenizer=tokenizer,
                                                discriminator=critic if use_gan else None)
        accelerator.backward(loss)
        if accelerator.sync_gradients and grad_clip is not None:
            logs["grad_norm"] = torch.as_tensor(accelerator.clip_grad_norm_(model.parameters(), grad_clip)).detach()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        if use_gan:
            d_loss, d_logs = loss_fn.discriminator_loss(discriminator, images, output.reconstruction)
            accelerator.backward(d_loss)
            if accelerator.sync_gradients and grad_clip is not None:
                accelerator.clip_grad_norm_(discriminator.parameters(), grad_clip)
            discriminator_optimizer.step()
            discriminator_scheduler.step()
            discriminator_optimizer.zero_grad(set_to_none=True)
            logs.update(d_logs)
    return logs


class RunningMeans:
    """Averages of the logged scalars since the last ``pop``."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for k, v in logs.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def pop(self, accelerator) -> dict[str, float]:
        """Means over the interval and over processes (every process must call it)."""
        if self.count == 0:
            return {}
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] / self.count for k in keys]).to(accelerator.device)
        values = accelerator.reduce(values, reduction="mean")
        self.sums, self.count = {}, 0
        return {k: float(v) for k, v in zip(keys, values.tolist())}


class StepClock:
    """The per-optimizer-step bookkeeping both trainers share: the step counter and run time in the
    checkpointed ``TrainingState``, the progress bar, the time budget (agreed on by every process), the
    logging/sampling/saving cadence, the images/s window, and the final save.

    Call ``tick`` once per optimizer step (after the last micro-step of an accumulation); it returns whether
    this is the run's last step. ``due(every)`` then says whether a periodic job runs at this step.
    """

    def __init__(self, accelerator, state, train, *, resumed: bool, progress: bool, budget=None) -> None:
        self.accelerator, self.state, self.train = accelerator, state, train
        self.budget = budget  # a BudgetProgress the LR schedule reads, updated at every step
        self.started = time.time() - state.seconds
        self.window = (time.time(), state.step)
        self.saved_at = state.step if resumed else -1
        self.last = self.out_of_time = False
        self.bar = tqdm(total=train.max_steps, initial=state.step, unit="step", dynamic_ncols=True,
                        disable=not (accelerator.is_main_process and progress))

    @property
    def running(self) -> bool:
        return self.state.step < self.train.max_steps and not self.out_of_time

    def tick(self) -> bool:
        state, t = self.state, self.train
        state.step += 1
        state.seconds = time.time() - self.started
        self.bar.update(1)
        if t.max_minutes is not None:
            # every process uses the same (mean) run time: it stops them together and sets one LR for all
            seconds = torch.tensor([state.seconds], dtype=torch.float64, device=self.accelerator.device)
            seconds = float(self.accelerator.reduce(seconds, reduction="mean"))
            self.out_of_time = seconds > 60 * t.max_minutes
            if self.budget is not None:
                self.budget.update(seconds=seconds, step=state.step)
            # when time ends the run first, the bar's total (and ETA) is the step count the time allows
            projected = int(state.step * 60 * t.max_minutes / max(seconds, 1e-9))
            if state.step >= 10 and projected < t.max_steps:
                self.bar.total = max(projected, state.step)
        self.last = state.step == t.max_steps or self.out_of_time
        return self.last

    def due(self, every: int) -> bool:
        return self.state.step % every == 0 or self.last

    def images_per_second(self, images_per_step: int) -> float:
        """Throughput since the previous call (the logging window)."""
        now = time.time()
        elapsed, steps = now - self.window[0], self.state.step - self.window[1]
        self.window = (now, self.state.step)
        return images_per_step * steps / max(elapsed, 1e-9)

    def save(self) -> None:
        save_checkpoint(self.accelerator, self.state)
        self.saved_at = self.state.step

    def close(self) -> bool:
        """Close the bar; save the final step if the cadence did not. Returns whether it saved."""
        self.bar.close()
        if self.saved_at == self.state.step:
            return False
        self.save()
        return True
