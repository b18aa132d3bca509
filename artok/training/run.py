"""The one training loop, for every kind of model: ``run(objective)``.

The loop owns what every run does the same way: the Accelerator, the AdamW optimizer and its learning-rate
schedule (over steps, or over ``train.max_minutes`` with ``schedule_over: minutes``), the EMA copy, exact
resumption from ``out_dir/checkpoints``, the step clock and time budget, logging (``metrics.jsonl``,
TensorBoard), sample grids, the ``evaluate`` callback, the export and the loss curves. An ``Objective``
(``artok.training.objectives``) says what differs: the models, a batch's loss, the grids and the export.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from artok.config import ConfigError, TrainConfig
from artok.training import fsdp
from artok.training.checkpoint import TrainingState, freeze, initialize_from, resume, save_checkpoint
from artok.training.ema import EMA
from artok.training.optim import adamw, build_scheduler, time_budget
from artok.training.report import MetricsLog, plot_curves, save_grid, write_training_summary
from artok.training.trackers import check_trackers, log_images, start_trackers


def build_accelerator(train: TrainConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    trackers = check_trackers(train.trackers) or None
    if not torch.distributed.is_initialized():
        # Accelerate keeps one process-wide state; a second run in the same Python process (a notebook, a
        # test session) with another precision or accumulation would be refused without this reset
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    # without a GPU, `accelerate launch --multi_gpu` processes only form a (gloo) group when told cpu=True
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    fsdp.check_launch(has_device=has_device)
    accelerator = Accelerator(
        mixed_precision=train.mixed_precision, gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=trackers, cpu=train.cpu or not has_device,
        project_config=ProjectConfiguration(project_dir=train.out_dir, logging_dir=str(Path(train.out_dir) / "logs"),
                                            automatic_checkpoint_naming=True,
                                            total_limit=train.checkpoints_total_limit),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)],
    )
    fsdp.configure(accelerator)  # this run's FSDP plugin; FSDP2 on CPU processes too (see fsdp.py)
    return accelerator


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    try:
        yield module.eval()
    finally:
        module.train(was_training)


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
    """The per-optimizer-step bookkeeping: the step counter and run time in the checkpointed
    ``TrainingState``, the progress bar, the time budget (agreed on by every process), the
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


class Objective:
    """What the loop asks of one kind of model; subclasses fill in the methods that raise.

    The loop calls, in order: ``setup`` (before the seed: what the run reads but does not train), ``build``
    (the module that is trained, followed by the EMA and exported), ``parameter_groups``/``learning_rate``,
    ``trainable`` (the module Accelerate prepares: its forward must hold the whole loss computation, so that
    DDP synchronises every gradient), ``prepare_extras`` (further models with their own optimizers), and
    ``loader``. Then, per micro-step, ``loss`` → backward and step → ``after_update``; per logging step
    ``record``; per grid ``grid``; per save ``export``; at the end ``finish`` (main process only).
    """

    project = "artok"  # the trackers' project name
    export_name = "export"  # out_dir/<export_name>: what ``export`` writes
    grid_name = "samples"  # the grids' name in TensorBoard
    postfix: dict[str, tuple[str, str]] = {"loss": ("loss", ".3f")}  # progress bar: name → (logged key, format)
    extra_models: tuple[nn.Module, ...] = ()  # prepared models updated in ``after_update`` (accumulated too)

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def setup(self, accelerator) -> None:
        pass

    def build(self, accelerator) -> nn.Module:
        raise NotImplementedError

    def parameter_groups(self, net: nn.Module) -> list[dict]:  # for AdamW
        raise NotImplementedError

    def learning_rate(self, global_batch: int) -> float:
        return self.cfg.train.lr

    def trainable(self, net: nn.Module) -> nn.Module:
        return net

    def prepare_extras(self, accelerator, schedule: Callable) -> None:  # schedule(optimizer): like the main one
        pass

    def describe(self, net: nn.Module) -> str:
        raise NotImplementedError

    def loader(self, accelerator, *, start: int) -> tuple[Iterable[dict], int]:
        raise NotImplementedError  # (this process's endless batches after `start` samples, the data set size)

    def loss(self, model: nn.Module, batch: dict, *, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError  # a micro-batch's loss through the prepared `model`, and scalars to log

    def after_update(self, *, step: int) -> dict[str, torch.Tensor]:  # scalars to log
        return {}

    def batch_size(self, batch: dict) -> int:
        raise NotImplementedError

    def record(self, accelerator) -> dict:  # scalars logged beside the mean losses (every process calls it)
        return {}

    def grid(self, net: nn.Module, device) -> np.ndarray:  # (H, W, 3) uint8; net in eval mode, no gradients
        raise NotImplementedError

    def export(self, net: nn.Module, directory: Path) -> None:
        raise NotImplementedError

    def finish(self, net: nn.Module, accelerator) -> dict:  # what the result reports (main process only)
        return {}


def micro_step(accelerator, objective, model, optimizer, scheduler, batch: dict, *, step: int,
               grad_clip: float | None) -> dict[str, torch.Tensor]:
    """One micro-step: the objective's loss, backward, clipping when gradients are synchronised (the last
    micro-step of an accumulation, as Accelerate requires), the optimizer and scheduler steps, then the
    objective's further updates. ``step`` is the number of optimizer steps done so far."""
    with accelerator.accumulate(model, *objective.extra_models):
        loss, logs = objective.loss(model, batch, step=step)
        accelerator.backward(loss)
        if accelerator.sync_gradients and grad_clip is not None:
            norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the shards' norms
                norm = norm.full_tensor()
            logs["grad_norm"] = torch.as_tensor(norm).detach().float()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        logs.update(objective.after_update(step=step))
    return logs


@dataclass
class RunResult:
    """What ``run`` leaves: the step reached, paths, the last logged record, what ``finish`` returned (main
    process), and this process's live model and EMA (under FSDP the model is sharded; the export holds its
    full weights)."""

    step: int
    out_dir: Path
    export_dir: Path
    main_process: bool
    model: nn.Module
    ema: EMA | None
    last_record: dict = field(default_factory=dict)
    finished: dict = field(default_factory=dict)


def run(objective: Objective, *, progress: bool = True,
        evaluate: Callable[[nn.Module], dict] | None = None) -> RunResult:
    """Train ``objective.cfg``: build, resume, loop, checkpoint, draw grids, export, finish.

    ``evaluate(model)``, when given, runs on the main process with every sample grid and at the
    end, on the weights that are exported (EMA when kept); the numbers it returns go into ``metrics.jsonl``
    at that step (its time counts against ``max_minutes``)."""
    from accelerate.utils import set_seed

    cfg = objective.cfg
    t = cfg.train
    out = Path(t.out_dir)
    accelerator = build_accelerator(t)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
    sharded = accelerator.distributed_type.name == "FSDP"
    if t.ema_decay is not None and sharded:
        raise ConfigError("train.ema_decay: an EMA copy of an FSDP-sharded model would hold the full model on "
                          "every process; set train.ema_decay: null with FSDP")
    objective.setup(accelerator)

    # -- build: identical initial weights on every process, then per-process random streams -------------
    set_seed(t.seed)
    net = objective.build(accelerator)
    if t.init_from:
        initialize_from(net, t.init_from)
    freeze(net, t.freeze)
    global_batch = t.batch_size * t.gradient_accumulation_steps * accelerator.num_processes
    lr = objective.learning_rate(global_batch)
    groups = objective.parameter_groups(net)
    if not groups:
        raise ConfigError(f"{type(net).__name__} has no trainable parameters (is everything frozen?)")
    optimizer = adamw(groups, lr=lr, betas=t.betas, weight_decay=t.weight_decay)
    budget = time_budget(t)
    schedule = partial(build_scheduler, schedule=t.lr_schedule, warmup_steps=t.warmup_steps, max_steps=t.max_steps,
                       min_lr_ratio=t.min_lr_ratio, ticks_per_step=accelerator.num_processes, progress=budget)
    # `net` stays the module trained: Accelerate's wrappers (DDP, FSDP) hold it as their inner module; FSDP
    # shards it in place, so grids, scores and exports use the main process's gathered full copy
    trainable = objective.trainable(net)
    full, units = None, []
    if sharded:
        units = fsdp.set_wrap_units(accelerator, trainable)
        full = fsdp.FullWeights(accelerator, net)
    model, optimizer, scheduler = accelerator.prepare(trainable, optimizer, schedule(optimizer))
    if full is not None:
        full.prepared = model
    objective.prepare_extras(accelerator, schedule)
    ema = EMA(net, t.ema_decay) if t.ema_decay is not None else None
    state = TrainingState()
    for obj in (state, ema):
        if obj is not None:
            accelerator.register_for_checkpointing(obj)
    set_seed(t.seed, device_specific=True)

    # -- resume (automatic from out_dir), then data positioned where this process stopped ------------------
    resumed = resume(accelerator, t.resume, out)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if main and resumed is not None:
        metrics_log.truncate_after(state.step)
    loader, num_samples = objective.loader(accelerator, start=state.samples_seen)
    start_trackers(accelerator, objective.project, cfg)
    if main:
        where = f"resumed from {resumed} at step {state.step}" if resumed else "fresh start"
        where += f"; FSDP units: {', '.join(units) or 'the whole model'}" if sharded else ""
        print(f"training {objective.describe(net)} on {accelerator.num_processes} process(es), {num_samples} samples, "
              f"global batch {global_batch}, lr {lr:.3g}, {where}; writing to {out}", flush=True)

    def snapshot() -> nn.Module:  # what grids, scores and exports use: the EMA weights when kept
        if ema is not None:
            return ema.shadow
        return full.module if full is not None else net

    def gather() -> None:  # every process, before main-process work on the snapshot: FSDP's full weights
        if full is not None:
            full.gather(state.step)

    def write_grid(step: int) -> None:
        gather()
        if main:
            with evaluating(snapshot()) as model_, torch.no_grad():
                grid = objective.grid(model_, accelerator.device)
            save_grid(grid, out / "samples" / f"step_{step:07d}.png")
            log_images(accelerator, objective.grid_name, grid, step)
            run_evaluation(step)

    def run_evaluation(step: int) -> None:
        if main and evaluate is not None:
            with evaluating(snapshot()) as model_:
                record = {"step": step, **evaluate(model_)}
            metrics_log.write(record)
            accelerator.log(record, step=step)

    def write_export() -> None:
        gather()
        if main:
            objective.export(snapshot(), out / objective.export_name)
            summarize()

    def summarize(evaluation: dict | None = None) -> None:  # training.json beside the export, for model cards
        write_training_summary(out / objective.export_name, cfg, steps=state.step, global_batch=global_batch,
                               seconds=state.seconds, metrics=record, evaluation=evaluation)

    # -- loop: every iteration is one micro-step; per-step work runs when gradients were synchronised -------
    means = RunningMeans()
    clock = StepClock(accelerator, state, t, resumed=resumed is not None, progress=progress, budget=budget)
    batches = iter(loader)
    record: dict = {}
    exported_at = -1
    model.train()
    while clock.running:
        batch = next(batches)
        logs = micro_step(accelerator, objective, model, optimizer, scheduler, batch, step=state.step,
                          grad_clip=t.grad_clip)
        state.samples_seen += objective.batch_size(batch)
        means.add(logs)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.update()
        clock.tick()
        if clock.due(t.log_every):
            record = {"step": state.step, **means.pop(accelerator), **objective.record(accelerator),
                      "lr": scheduler.get_last_lr()[0], "images_per_second": clock.images_per_second(global_batch)}
            accelerator.log(record, step=state.step)
            if main:
                metrics_log.write(record)
                clock.bar.set_postfix({name: f"{record[key]:{fmt}}" for name, (key, fmt) in objective.postfix.items()
                                       if key in record} | {"img_s": f"{record['images_per_second']:.0f}"})
        if clock.due(t.sample_every):
            write_grid(state.step)
        if clock.due(t.save_every):
            clock.save()
            write_export()
            if main:
                plot_curves(metrics_log.read(), out / "loss_curves.png")
            exported_at = state.step

    # -- finish: the last step saved and exported; the final score, what the objective does last, the curves
    if clock.close() or exported_at != state.step:
        write_export()
    gather()
    if not clock.due(t.sample_every):  # the last step drew a grid and scored it; a resumed, finished run did not
        run_evaluation(state.step)
    finished = objective.finish(snapshot(), accelerator) if main else {}
    if main:
        summarize(finished)
        plot_curves(metrics_log.read(), out / "loss_curves.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return RunResult(step=state.step, out_dir=out, export_dir=out / objective.export_name, main_process=main,
                     model=net, ema=ema, last_record=record, finished=finished)
