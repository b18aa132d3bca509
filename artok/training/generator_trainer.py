"""Generator training with Accelerate: the next-scale transformer on token ids, from the shards that
``artok encode`` writes or from images tokenized on the fly. ``train/generator.py`` and
``artok train generator`` call ``train_generator``; one optimisation step is ``generator_step``."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import artok
from artok.config import ConfigError, GeneratorTrainConfig
from artok.data.encode import weights_hash
from artok.data.tokens import TokenDataset
from artok.hub import Pipeline
from artok.registry import build_generator, build_hart
from artok.sampling import check_compatible, generate
from artok.training.checkpoint import TrainingState, export, freeze, initialize_from, resume
from artok.training.ema import EMA
from artok.training.loop import RunningMeans, StepClock
from artok.training.optim import build_scheduler, time_budget, weight_matrix_groups
from artok.training.report import MetricsLog, plot_curves, save_grid, tile_grid
from artok.training.tokenizer_trainer import build_accelerator, flat_config, log_images

EXPORT_DIR = "pipeline"  # out_dir/pipeline: tokenizer/ + generator/ (EMA weights), for artok sample


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------

class TokenTrainingSet(Dataset):
    """``dataset[(index, epoch)]`` → {"ids": per scale (pn*pn,), "label"} from an encoded dataset.

    With several views per image and ``views="random"``, index i is an image and its view is drawn from
    (seed, epoch, i), so every epoch sees each image once, in a different augmentation (LlamaGen).
    """

    def __init__(self, tokens: TokenDataset, *, seed: int = 0, views: str = "random") -> None:
        self.tokens, self.seed = tokens, seed
        view = np.concatenate([np.asarray(s["view"]) for s in tokens.shards]) if tokens.shards else np.zeros(0)
        if views == "random" and tokens.manifest.get("views_per_input", 1) > 1:
            self.starts = np.flatnonzero(view == 0)  # records of one image are consecutive, view 0 first
        else:
            self.starts = np.arange(len(view))
        self.counts = np.diff(np.append(self.starts, len(view)))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        offset = 0
        if self.counts[index] > 1:
            g = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            offset = int(torch.randint(0, int(self.counts[index]), (), generator=g))
        record = self.tokens[int(self.starts[index] + offset)]
        item = {"ids": record.ids, "label": record.label}
        if record.residual is not None:
            item["residual"] = record.residual  # (C, h, w): a hybrid tokenizer's continuous residual
        return item


def collate_ids(samples: list[dict]) -> dict:
    batch = {"ids": [torch.stack([s["ids"][k] for s in samples]) for k in range(len(samples[0]["ids"]))],
             "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long)}
    if "residual" in samples[0]:
        batch["residual"] = torch.stack([s["residual"] for s in samples])
    return batch


def check_tokens_match(tokens: TokenDataset, tok, tokenizer_path: str) -> None:
    """The shards must come from the same tokenizer weights (ids of another codebook are meaningless)."""
    manifest = tokens.manifest
    if list(manifest["scales"]) != list(tok.scales) or manifest["codebook_size"] != tok.codebook_size:
        raise ConfigError(f"data.tokens {tokens.directory} was encoded with scales {manifest['scales']} and "
                          f"{manifest['codebook_size']} codes, the tokenizer {tokenizer_path} has {list(tok.scales)} "
                          f"and {tok.codebook_size}")
    if manifest["tokenizer_sha256"] != weights_hash(tok):
        raise ConfigError(f"data.tokens {tokens.directory} was encoded by different tokenizer weights than "
                          f"{tokenizer_path} (weights hash differs); encode again with this tokenizer")


def map_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unlabelled records (label −1) train the unconditional (null-class) embedding."""
    return torch.where(labels < 0, torch.full_like(labels, num_classes), labels)


# ---------------------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------------------

def active_scales(step: int, *, num_scales: int, start: int, steps: int) -> int:
    """Progressive training: scales trained at ``step``, from ``start`` up to all at ``steps`` (VAR's pg)."""
    if start <= 0 or steps <= 0:
        return num_scales
    return min(num_scales, start + int((num_scales - start + 1) * step / steps))


def generator_step(accelerator, model, tok, optimizer, scheduler, ids: list[torch.Tensor], labels: torch.Tensor, *,
                   num_active: int, label_smoothing: float = 0.0, grad_clip: float | None = None) -> dict:
    """One micro-step of teacher forcing: cross-entropy of the logits of the first ``num_active`` tokens
    (a block-causal model's logits there do not depend on later tokens, so this is progressive training)."""
    with torch.no_grad():
        inputs = tok.teacher_inputs(ids)  # (B, L - first, C)
        targets = torch.cat(ids, dim=1)  # (B, L)
    with accelerator.accumulate(model):
        logits = model(inputs, labels)[:, :num_active]  # (B, l, V)
        target = targets[:, :num_active]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               label_smoothing=label_smoothing)
        grad_norm = _backward_and_step(accelerator, model, optimizer, scheduler, loss, grad_clip)
    with torch.no_grad():
        correct = (logits.argmax(-1) == target).float()
        logs = {"loss": loss.detach(), "accuracy": correct.mean()}
        last = tok.scales[-1] ** 2 if num_active == targets.shape[1] and len(tok.scales) > 1 else 0
        if last:
            logs["accuracy_last_scale"] = correct[:, -last:].mean()
    return _with_grad_norm(logs, grad_norm)


def _backward_and_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, grad_clip: float | None):
    """Backward, clip when gradients are synchronised, step; inside ``accelerator.accumulate``. Returns the
    gradient norm before clipping (None when not clipped this micro-step)."""
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients and grad_clip is not None:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _with_grad_norm(logs: dict, grad_norm) -> dict:
    if grad_norm is not None:
        logs["grad_norm"] = torch.as_tensor(grad_norm).detach().float()
    return logs


class HartObjective(torch.nn.Module):
    """HART's training losses (cross-entropy of the kept tokens + the residual diffusion loss) as a forward
    pass, so that Accelerate's DDP wrapper sees a forward and synchronises the gradients."""

    def __init__(self, hart: torch.nn.Module) -> None:
        super().__init__()
        self.hart = hart

    def forward(self, ids, inputs, labels, residual, codebook) -> dict:
        return self.hart.training_losses(ids, inputs, labels, residual=residual, codebook=codebook)


def hart_step(accelerator, model, tok, optimizer, scheduler, ids: list[torch.Tensor], labels: torch.Tensor,
              residual: torch.Tensor, codebook: torch.Tensor, *, grad_clip: float | None = None) -> dict:
    """One micro-step of HART training: MAR-masked last scale, cross-entropy plus diffusion loss."""
    with torch.no_grad():
        inputs = tok.teacher_inputs(ids)
    with accelerator.accumulate(model):
        losses = model(ids, inputs, labels, residual, codebook)
        grad_norm = _backward_and_step(accelerator, model, optimizer, scheduler, losses["loss"], grad_clip)
    return _with_grad_norm({k: v.detach().float() for k, v in losses.items()}, grad_norm)


# ---------------------------------------------------------------------------------------------------------
# Sample grids
# ---------------------------------------------------------------------------------------------------------

def class_grid(images: torch.Tensor, rows: int) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1], N = rows × columns, one row per class → one (H', W', 3) uint8 grid."""
    return tile_grid(images, columns=math.ceil(images.shape[0] / rows))


@torch.no_grad()
def sample_grid(generator_model, tok, recipe, device) -> np.ndarray:
    """One row per class of ``recipe.sample_classes``, same seed every time, so grids compare across steps."""
    labels = torch.tensor([c for c in recipe.sample_classes for _ in range(recipe.samples_per_class)], device=device)
    rng = torch.Generator(device=device).manual_seed(recipe.sample_seed)
    was_training = generator_model.training
    out = generate(generator_model.eval(), tok, labels, cfg_scale=recipe.sample_cfg, top_k=recipe.sample_top_k,
                   top_p=recipe.sample_top_p, generator=rng)
    generator_model.train(was_training)
    return class_grid(out.images.cpu(), rows=len(recipe.sample_classes))


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------

@dataclass
class GeneratorTrainResult:
    step: int
    out_dir: Path
    export_dir: Path
    final_loss: float | None = None
    main_process: bool = True
    generator: torch.nn.Module | None = None
    ema: EMA | None = None

    def summary(self) -> dict:
        return {"step": self.step, "out_dir": str(self.out_dir), "export": str(self.export_dir),
                "final_loss": self.final_loss}


def load_tokenizer(path: str, device) -> torch.nn.Module:
    model = artok.from_pretrained(path)
    tok = model.tokenizer if isinstance(model, Pipeline) else model
    if not hasattr(tok, "teacher_inputs"):
        raise ConfigError(f"tokenizer: {path} holds a {type(tok).__name__}, not a tokenizer")
    return tok.to(device).eval().requires_grad_(False)


def train_generator(cfg: GeneratorTrainConfig, *, progress: bool = True,
                    evaluate: Callable[[torch.nn.Module, torch.nn.Module], dict] | None = None) -> GeneratorTrainResult:
    """Train, checkpoint, draw sample grids and export (tokenizer + EMA generator) as a pipeline.

    ``evaluate(generator, tokenizer)``, when given, runs on the main process with every sample grid and at the
    end, on the weights that are exported (EMA when kept); the numbers it returns go into ``metrics.jsonl`` at
    that step (the quickstart records its samples' class accuracy against steps this way)."""
    from accelerate.utils import set_seed

    cfg.check_runnable()
    t, recipe = cfg.train, cfg.recipe
    out = Path(t.out_dir)
    accelerator = build_accelerator(t)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")

    if t.ema_decay is not None and accelerator.distributed_type.name == "FSDP":
        raise ConfigError("train.ema_decay: an EMA copy of an FSDP-sharded generator would hold the full model on "
                          "every process; set train.ema_decay: null with FSDP")
    tok = load_tokenizer(cfg.tokenizer, accelerator.device)
    if cfg.is_hart and not hasattr(tok, "residual"):
        raise ConfigError(f"tokenizer: HART trains on a hybrid tokenizer's ids and residuals; {cfg.tokenizer} holds "
                          f"a {tok.config.quantizer.kind} tokenizer")
    set_seed(t.seed)
    generator_model = build_hart(cfg.generator) if cfg.is_hart else build_generator(cfg.generator)
    check_compatible(generator_model, tok)
    if t.init_from:
        initialize_from(generator_model, t.init_from)
    freeze(generator_model, t.freeze)
    global_batch = t.batch_size * t.gradient_accumulation_steps * accelerator.num_processes
    lr = t.lr * global_batch / 256 if recipe.scale_lr else t.lr
    groups = weight_matrix_groups(generator_model, t.weight_decay)  # no decay on embeddings, norms, biases
    if not groups:
        raise ConfigError("the generator has no trainable parameters (is everything frozen?)")
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    budget = time_budget(t)
    scheduler = build_scheduler(optimizer, schedule=t.lr_schedule, warmup_steps=t.warmup_steps,
                                max_steps=t.max_steps, min_lr_ratio=t.min_lr_ratio,
                                ticks_per_step=accelerator.num_processes, progress=budget)
    model, optimizer, scheduler = accelerator.prepare(HartObjective(generator_model) if cfg.is_hart else generator_model,
                                                      optimizer, scheduler)
    generator_model = accelerator.unwrap_model(model)
    if cfg.is_hart:
        generator_model = generator_model.hart
        codebook = tok.indices_to_codes(torch.arange(tok.codebook_size, device=accelerator.device))  # (V, C)
    ema = EMA(generator_model, t.ema_decay) if t.ema_decay is not None else None
    state = TrainingState()
    for obj in (state, ema):
        if obj is not None:
            accelerator.register_for_checkpointing(obj)
    set_seed(t.seed, device_specific=True)

    resumed = resume(accelerator, t.resume, out)
    metrics_log = MetricsLog(out / "metrics.jsonl")
    if main and resumed is not None:
        metrics_log.truncate_after(state.step)
    loader, num_samples = _training_loader(cfg, tok, accelerator, start=state.samples_seen)
    accelerator.init_trackers("artok-generator", config=flat_config(cfg))
    if main:
        where = f"resumed from {resumed} at step {state.step}" if resumed else "fresh start"
        print(f"training generator ({sum(p.numel() for p in generator_model.parameters()):,} parameters) on "
              f"{accelerator.num_processes} process(es), {num_samples} samples, global batch {global_batch}, "
              f"lr {lr:.3g}, {where}; writing to {out}", flush=True)

    def snapshot() -> torch.nn.Module:
        return ema.shadow if ema is not None else generator_model

    def write_grid(step: int) -> None:
        if main:
            grid = sample_grid(snapshot(), tok, recipe, accelerator.device)
            save_grid(grid, out / "samples" / f"step_{step:07d}.png")
            log_images(accelerator, "samples", grid, step)
            run_evaluation(step)

    def run_evaluation(step: int) -> None:
        if main and evaluate is not None:
            model_ = snapshot()
            was_training = model_.training
            record = {"step": step, **evaluate(model_.eval(), tok)}  # its time counts against max_minutes
            model_.train(was_training)
            metrics_log.write(record)
            accelerator.log(record, step=step)

    def write_export() -> None:
        if main:
            export(snapshot(), out / EXPORT_DIR / "generator")
            if not (out / EXPORT_DIR / "tokenizer" / "config.json").exists():
                tok.save_pretrained(out / EXPORT_DIR / "tokenizer")
            (out / EXPORT_DIR / "config.json").write_text(json.dumps({"model_type": "pipeline", "format_version": 1}))

    means = RunningMeans()
    clock = StepClock(accelerator, state, t, resumed=resumed is not None, progress=progress, budget=budget)
    batches = iter(loader)
    last_loss = None
    model.train()
    while clock.running:
        batch = next(batches)
        ids, labels, residual = _batch_ids(batch, tok, accelerator.device, hybrid=cfg.is_hart)
        labels = map_labels(labels, generator_model.num_classes)
        num_scales = active_scales(state.step, num_scales=len(tok.scales), start=recipe.progressive_start,
                                   steps=recipe.progressive_steps)
        if cfg.is_hart:
            logs = hart_step(accelerator, model, tok, optimizer, scheduler, ids, labels, residual, codebook,
                             grad_clip=t.grad_clip)
        else:
            num_active = (sum(generator_model.block_sizes[:num_scales]) if generator_model.config.block_unit == "scale"
                          else generator_model.num_tokens)
            logs = generator_step(accelerator, model, tok, optimizer, scheduler, ids, labels, num_active=num_active,
                                  label_smoothing=recipe.label_smoothing, grad_clip=t.grad_clip)
        state.samples_seen += labels.shape[0]
        means.add(logs)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.update(generator_model)
        clock.tick()
        if clock.due(t.log_every):
            record = {"step": state.step, **means.pop(accelerator), "lr": scheduler.get_last_lr()[0],
                      "active_scales": num_scales, "images_per_second": clock.images_per_second(global_batch)}
            last_loss = record["loss"]
            accelerator.log(record, step=state.step)
            if main:
                metrics_log.write(record)
                clock.bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}",
                                      img_s=f"{record['images_per_second']:.0f}")
        if clock.due(t.sample_every):
            write_grid(state.step)
        if clock.due(t.save_every):
            clock.save()
            write_export()
    clock.close()
    write_export()
    if not clock.due(t.sample_every):  # the last step drew a grid and scored it; a resumed, finished run did not
        run_evaluation(state.step)
    if main:
        plot_curves(metrics_log.read(), out / "loss_curves.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return GeneratorTrainResult(step=state.step, out_dir=out, export_dir=out / EXPORT_DIR, final_loss=last_loss,
                                main_process=main, generator=generator_model, ema=ema)


def _training_loader(cfg: GeneratorTrainConfig, tok, accelerator, *, start: int) -> tuple[DataLoader, int]:
    from artok.data import build_dataset, collate
    from artok.data.loader import InfiniteShardedSampler

    t = cfg.train
    if cfg.data.tokens:
        tokens = TokenDataset(cfg.data.tokens)
        check_tokens_match(tokens, tok, cfg.tokenizer)
        labels = tokens.labels
        if len(labels) and int(labels.max()) >= cfg.generator.num_classes:
            raise ConfigError(f"data.tokens holds labels up to {int(labels.max())}, but the generator has "
                              f"num_classes={cfg.generator.num_classes}")
        dataset, collate_fn = TokenTrainingSet(tokens, seed=t.seed, views=cfg.data.views), collate_ids
    else:
        dataset = build_dataset(cfg.data.images, image_size=tok.image_size, seed=t.seed)
        collate_fn = collate
    sampler = InfiniteShardedSampler(len(dataset), num_replicas=accelerator.num_processes,
                                     rank=accelerator.process_index, seed=t.seed, start=start)
    loader = DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_fn, drop_last=True, generator=torch.Generator().manual_seed(t.seed))
    return loader, len(dataset)


def _batch_ids(batch: dict, tok, device, *, hybrid: bool = False):
    """Token ids per scale, labels and (hybrid) the continuous residual of a batch; images are tokenized on the
    fly."""
    labels = batch["labels"].to(device)
    if "ids" in batch:
        ids = [i.to(device) for i in batch["ids"]]
        residual = batch.get("residual")
        if hybrid and residual is None:
            raise ConfigError("data.tokens holds no continuous residuals: encode with the hybrid tokenizer")
        return ids, labels, (residual.to(device) if residual is not None else None)
    images = batch["images"].to(device)
    if hybrid:
        with torch.no_grad():
            ids, residual = tok.tokenize_hybrid(images)
        return ids, labels, residual
    return tok.tokenize(images), labels, None
