"""Tokenizer training with Accelerate: one loop for single-scale VQ, multi-scale (VAR) and hybrid (HART)
tokenizers, from one CPU process to many GPUs. ``train/tokenizer.py`` and ``artok train tokenizer`` call
``train_tokenizer``; the step itself lives in ``loop.gan_step``."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from artok.config import TokenizerTrainConfig, TrainConfig
from artok.data import build_dataset, evaluation_loader, training_loader
from artok.losses import PatchDiscriminator, TokenizerLoss
from artok.metrics import evaluate_tokenizer, reconstruct
from artok.registry import build_tokenizer
from artok.training.checkpoint import TrainingState, export, freeze, initialize_from, resume
from artok.training.ema import EMA
from artok.training.loop import RunningMeans, StepClock, gan_step
from artok.training.optim import build_optimizer, build_scheduler, time_budget
from artok.training.report import MetricsLog, plot_curves, reconstruction_grid, save_grid

EXPORT_DIR = "tokenizer"  # out_dir/tokenizer: the EMA weights, loadable with artok.from_pretrained
GRID_IMAGES = 16
EVAL_SPLIT = {"fashion-mnist": "test", "procedural": "test", "skimage": "test"}  # held-out where one exists


@dataclass
class TrainResult:
    """What a run leaves: the step reached, paths, the held-out evaluation (main process), and the live
    models of this process (for inspection in tests and notebooks)."""

    step: int
    out_dir: Path
    export_dir: Path
    bad_files: int
    eval: dict = field(default_factory=dict)
    tokenizer: torch.nn.Module | None = None
    ema: EMA | None = None

    def summary(self) -> dict:
        return {"step": self.step, "out_dir": str(self.out_dir), "export": str(self.export_dir),
                "bad_files": self.bad_files, "eval": self.eval}


def build_accelerator(train: TrainConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    trackers = [t for t in train.trackers if t != "none"] or None
    if not torch.distributed.is_initialized():
        # Accelerate keeps one process-wide state; a second run in the same Python process (a notebook, a
        # test session) with another precision or accumulation would be refused without this reset
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    # without a GPU, `accelerate launch --multi_gpu` processes only form a (gloo) group when told cpu=True
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return Accelerator(
        mixed_precision=train.mixed_precision, gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=trackers, cpu=train.cpu or not has_device,
        project_config=ProjectConfiguration(project_dir=train.out_dir, logging_dir=str(Path(train.out_dir) / "logs"),
                                            automatic_checkpoint_naming=True,
                                            total_limit=train.checkpoints_total_limit),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)],
    )


def flat_config(cfg: TokenizerTrainConfig) -> dict:
    """Dotted scalar hyper-parameters, as TensorBoard's hparams want them."""
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", cfg.to_dict())
    return out


def codebook_logs(tokenizer) -> dict[str, float]:
    codebook = tokenizer.quantizer.codebook
    usage, perplexity = codebook.usage_fraction().tolist(), codebook.perplexity().tolist()
    logs = {"restarted_codes": float(codebook.restarted_last_update)}
    for pn, u, p in zip(tokenizer.scales, usage, perplexity):
        logs[f"usage/{pn}x{pn}"], logs[f"perplexity/{pn}x{pn}"] = u, p
    return logs


def log_images(accelerator, name: str, grid, step: int) -> None:
    for tracker in accelerator.trackers:
        if hasattr(tracker, "log_images"):
            tracker.log_images({name: grid[None]}, step=step, dataformats="NHWC")


def train_tokenizer(cfg: TokenizerTrainConfig, *, progress: bool = True) -> TrainResult:
    """Train, checkpoint, export and evaluate; returns the final step, eval results and output paths."""
    from accelerate.utils import gather_object, set_seed

    t = cfg.train
    out = Path(t.out_dir)
    accelerator = build_accelerator(t)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")

    # -- build: identical initial weights on every process, then per-process random streams -------------
    set_seed(t.seed)
    tokenizer = build_tokenizer(cfg.tokenizer)
    if t.init_from:
        initialize_from(tokenizer, t.init_from)
    freeze(tokenizer, t.freeze)
    loss_fn = TokenizerLoss(cfg.loss).to(accelerator.device)
    optimizer = build_optimizer(tokenizer, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    budget = time_budget(t)
    schedule = dict(schedule=t.lr_schedule, warmup_steps=t.warmup_steps, max_steps=t.max_steps,
                    min_lr_ratio=t.min_lr_ratio, ticks_per_step=accelerator.num_processes, progress=budget)
    scheduler = build_scheduler(optimizer, **schedule)
    model, optimizer, scheduler = accelerator.prepare(tokenizer, optimizer, scheduler)
    discriminator = d_optimizer = d_scheduler = None
    if cfg.loss.gan_weight > 0:  # GAN tokenizers: a second model and optimizer, updated in the same gan_step
        discriminator = PatchDiscriminator(channels=cfg.loss.discriminator_channels,
                                           num_layers=cfg.loss.discriminator_layers, norm=cfg.loss.discriminator_norm)
        d_optimizer = build_optimizer(discriminator, lr=t.discriminator_lr or t.lr, betas=t.betas)
        d_scheduler = build_scheduler(d_optimizer, **schedule)
        discriminator, d_optimizer, d_scheduler = accelerator.prepare(discriminator, d_optimizer, d_scheduler)
    tokenizer = accelerator.unwrap_model(model)
    ema = EMA(tokenizer, t.ema_decay) if t.ema_decay is not None else None
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
    dataset = build_dataset(cfg.data, image_size=cfg.tokenizer.image_size, seed=t.seed)
    loader = training_loader(dataset, batch_size=t.batch_size, num_workers=cfg.data.num_workers,
                             num_replicas=accelerator.num_processes, rank=accelerator.process_index, seed=t.seed,
                             start=state.samples_seen)
    eval_set = build_dataset(cfg.data, image_size=cfg.tokenizer.image_size, train=False, seed=t.seed,
                             split=EVAL_SPLIT.get(cfg.data.source, cfg.data.split))
    grid_images = next(iter(evaluation_loader(eval_set, batch_size=GRID_IMAGES, num_images=GRID_IMAGES)))["images"]
    accelerator.init_trackers("artok-tokenizer", config=flat_config(cfg))
    if main:
        where = f"resumed from {resumed} at step {state.step}" if resumed else "fresh start"
        print(f"training {cfg.tokenizer.quantizer.kind} tokenizer on {accelerator.num_processes} process(es), "
              f"{len(dataset)} images, {where}; writing to {out}", flush=True)

    def snapshot() -> torch.nn.Module:
        return ema.shadow if ema is not None else tokenizer

    def write_grid(step: int) -> None:
        if not main:
            return
        net = snapshot()
        was_training = net.training
        with torch.no_grad():
            _, rec = reconstruct(net.eval(), grid_images.to(accelerator.device))
        net.train(was_training)
        grid = reconstruction_grid(grid_images, rec.cpu())
        save_grid(grid, out / "samples" / f"step_{step:07d}.png")
        log_images(accelerator, "reconstructions", grid, step)

    def write_export() -> None:
        if main:
            export(snapshot(), out / EXPORT_DIR)
            plot_curves(metrics_log.read(), out / "loss_curves.png")

    # -- loop: every iteration is one micro-step; per-step work runs when gradients were synchronised -------
    bad_files: set[str] = set()
    new_bad: list[str] = []
    means = RunningMeans()
    clock = StepClock(accelerator, state, t, resumed=resumed is not None, progress=progress, budget=budget)
    images_per_step = t.batch_size * t.gradient_accumulation_steps * accelerator.num_processes
    batches = iter(loader)
    model.train()
    while clock.running:
        batch = next(batches)
        new_bad += batch["bad_files"]
        images = batch["images"].to(accelerator.device)
        logs = gan_step(accelerator, model, discriminator, optimizer, d_optimizer, scheduler, d_scheduler, loss_fn,
                        images, step=state.step, grad_clip=t.grad_clip)
        state.samples_seen += images.shape[0]
        means.add(logs)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.update(tokenizer)
        clock.tick()
        if clock.due(t.log_every):
            record = {"step": state.step, **means.pop(accelerator), **codebook_logs(tokenizer),
                      "lr": scheduler.get_last_lr()[0]}
            seen = [f for files in gather_object([new_bad]) for f in files]
            bad_files.update(seen)
            new_bad = []
            record["images_per_second"] = clock.images_per_second(images_per_step)
            record["bad_files"] = len(bad_files)
            accelerator.log(record, step=state.step)
            if main:
                metrics_log.write(record)
                if seen:
                    (out / "bad_files.txt").write_text("".join(f + "\n" for f in sorted(bad_files)))
                clock.bar.set_postfix(loss=f"{record['loss']:.3f}", psnr=f"{record['psnr']:.1f}",
                                      img_s=f"{record['images_per_second']:.0f}")
        if clock.due(t.sample_every):
            write_grid(state.step)
        if clock.due(t.save_every):
            clock.save()
            write_export()

    # -- finish: the last step saved, exported and drew the curves; evaluate the EMA weights on held-out images
    if clock.close():
        write_export()
    result = TrainResult(step=state.step, out_dir=out, export_dir=out / EXPORT_DIR, bad_files=len(bad_files),
                         tokenizer=tokenizer, ema=ema)
    if main and t.eval_images > 0:
        batches = evaluation_loader(eval_set, batch_size=min(64, t.eval_images), num_images=t.eval_images)
        result.eval = evaluate_tokenizer(snapshot(), batches, metrics=("psnr", "ssim", "usage", "prefix"),
                                         device=accelerator.device, progress=False)
        (out / "eval.json").write_text(json.dumps(result.eval, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result
