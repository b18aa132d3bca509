"""Step functions of tokenizer training, free of I/O so tests can run them on CPU.

``gan_step`` is one micro-step: the tokenizer (generator) update, then, once the adversarial loss is on,
the discriminator update. Both optimizers are prepared by Accelerate, so gradient accumulation, mixed
precision and DDP are handled the same way for both.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


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


@contextlib.contextmanager
def capture_latent(tokenizer: nn.Module, enabled: bool = True) -> Iterator[dict]:
    """Record the continuous latent f (output of ``quant_conv``) of the next forward, for regularisers
    that need it; the hook keeps the graph, so gradients flow back into the encoder."""
    found: dict = {}
    if not enabled or not hasattr(tokenizer, "quant_conv"):
        yield found
        return
    handle = tokenizer.quant_conv.register_forward_hook(lambda module, args, out: found.__setitem__("latent", out))
    try:
        yield found
    finally:
        handle.remove()


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
        with capture_latent(tokenizer, enabled=loss_fn.config.entropy_weight > 0) as found:
            output = model(images)
        with frozen(critic):
            loss, logs = loss_fn.generator_loss(output, images, step=step, tokenizer=tokenizer,
                                                discriminator=critic if use_gan else None, latent=found.get("latent"))
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
