"""``artok quickstart``: artok's whole job on data that needs no download, in about ten minutes on a CPU.

Trains a small multi-scale tokenizer on the centred procedural shapes (10 classes; ``procedural-centred``),
encodes them to token shards, trains a small next-scale generator on the shards, samples a grid per class,
and writes a report (Markdown and HTML) with the reconstruction grid, the samples, the loss curves and the
metrics: PSNR, codebook usage per scale; the class accuracy of the samples (overall, per class, and against
generator steps) under a classifier trained on real images, beside that classifier's accuracy on real images
and on the tokenizer's reconstructions; FID, precision and recall of the samples on the classifier's features.

The tokenizer has a fixed share of the budget, the generator what the other stages leave; both end on time,
with their learning-rate schedules laid over that time (``schedule_over: minutes``); a short speed probe
sets their warm-up and logging cadence (a GPU is used when present).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from artok.config import DataConfig, GeneratorTrainConfig, LossConfig, TokenizerTrainConfig, TrainConfig
from artok.data.builtin import STYLE_SOURCES
from artok.registry import generator_config, tokenizer_config

TOKENIZER_PRESET = "quickstart-var-vqvae"
GENERATOR_PRESET = "quickstart-var"
# the demo's data: the shapes centred on flat backgrounds in eight named colours (on the scattered ones, any colour
# on gradients anywhere, the same recipe reached 51.5% class accuracy: the README's quickstart research table)
STYLE = "centred"  # its data source: artok.data.builtin.STYLE_SOURCES[STYLE]
# shares of the budget; the generator gets what is left after a reserve for sampling, FID and the report
SHARE = {"tokenizer": 0.36, "encode": 0.06, "classifier": 0.05}
STAGES = 6
CLASSIFIER_IMAGES, CLASSIFIER_STEPS = 10000, 1000  # about 30 s on 2 cores; 100% on real centred test shapes
CURVE_SAMPLES = 100  # samples scored at every generator grid, for the class-accuracy curve
CFG_SCALE, TOP_K = 3.0, 0  # the sampler's settings for the scored samples
TOKENIZER_BATCH, GENERATOR_BATCH = 16, 32
GENERATOR_LR = 6e-3  # unscaled; at 720 steps: 1e-3 21% class accuracy, 3e-3 37%, 6e-3 45%, 1e-2 45%


@dataclass
class Budget:
    minutes: float
    started: float

    def seconds(self, stage: str) -> float:
        return 60 * self.minutes * SHARE[stage]

    def elapsed(self) -> float:
        return time.time() - self.started


def banner(k: int, text: str, budget: "Budget") -> None:
    print(f"\n[{k}/{STAGES}] {text}  ({budget.elapsed() / 60:.1f} min elapsed)", flush=True)


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def probe_steps(step, seconds: float, *, warmup: int = 1, runs: int = 2, minimum: int = 20) -> int:
    """How many calls of ``step()`` fit into ``seconds``, timed after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(runs):
        step()
    per_step = (time.perf_counter() - t) / runs
    return max(minimum, int(seconds / per_step))


def _tokenizer_probe(batch_size: int, device: str):
    from artok.registry import build_tokenizer

    tok = build_tokenizer(TOKENIZER_PRESET).to(device).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-4)
    x = torch.rand(batch_size, 3, tok.image_size, tok.image_size, device=device) * 2 - 1

    def step():
        out = tok(x)
        loss = (out.reconstruction - x).abs().mean() + sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _generator_probe(batch_size: int, device: str):
    from artok.registry import build_generator, build_tokenizer

    tok = build_tokenizer(TOKENIZER_PRESET).to(device).eval()
    gen = build_generator(GENERATOR_PRESET).to(device).train()
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)
    ids = [torch.randint(0, tok.codebook_size, (batch_size, s * s), device=device) for s in tok.scales]
    labels = torch.randint(0, gen.num_classes, (batch_size,), device=device)

    def step():
        with torch.no_grad():
            inputs = tok.teacher_inputs(ids)
        logits = gen(inputs, labels)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.cat(ids, 1).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def tokenizer_recipe(tokenizer, out_dir: Path, *, minutes: float, steps: int, seed: int,
                     num_images: int) -> TokenizerTrainConfig:
    """The quickstart's tokenizer training: ``tokenizer`` (a TokenizerConfig) on ``num_images`` shapes for
    ``minutes``, the LR schedule laid over them; ``steps`` (what a speed probe expects) sets the cadences."""
    return TokenizerTrainConfig(
        tokenizer=tokenizer, data=DataConfig(source=STYLE_SOURCES[STYLE], num_samples=num_images, num_workers=0),
        loss=LossConfig(perceptual_weight=0.0, gan_weight=0.0, entropy_weight=0.1),  # keeps every scale's codes in use
        train=TrainConfig(out_dir=str(out_dir), seed=seed, batch_size=TOKENIZER_BATCH, max_steps=10 * steps,
                          max_minutes=minutes, schedule_over="minutes", lr=1e-3, betas=(0.9, 0.95),
                          lr_schedule="cosine", warmup_steps=min(100, steps // 10), min_lr_ratio=0.05,
                          ema_decay=0.99, log_every=max(1, steps // 50), sample_every=max(1, steps // 4),
                          save_every=steps, eval_images=512, trackers=("tensorboard",), resume="never"))


def generator_recipe(generator, tokenizer_dir: Path, tokens_dir: Path, out_dir: Path, *, minutes: float, steps: int,
                     seed: int, classes: int) -> GeneratorTrainConfig:
    """The quickstart's generator training: ``generator`` (a GeneratorConfig or HartConfig) on the shards in
    ``tokens_dir`` for ``minutes``, batch ``GENERATOR_BATCH``, lr ``GENERATOR_LR`` unscaled, linear decay over
    the minutes, EMA 0.995; ``steps`` (what a speed probe expects) sets warm-up and cadences. The exported
    pipeline records the quickstart's sampling settings (``CFG_SCALE``, ``TOP_K``)."""
    return GeneratorTrainConfig.from_dict({
        "generator": generator.to_dict(), "tokenizer": str(tokenizer_dir),
        "data": {"tokens": str(tokens_dir), "num_workers": 0},
        "recipe": {"scale_lr": False, "sample_classes": list(range(classes)), "samples_per_class": 4,
                   "sample_cfg": CFG_SCALE, "sample_top_k": TOP_K, "sample_top_p": 0.0, "sample_seed": seed,
                   "export_sampling": True},  # `artok sample` on the quickstart's pipeline uses these settings
        "train": {"out_dir": str(out_dir), "seed": seed, "batch_size": GENERATOR_BATCH, "max_steps": 10 * steps,
                  "max_minutes": minutes, "schedule_over": "minutes", "lr": GENERATOR_LR,
                  "warmup_steps": min(100, steps // 10),
                  "lr_schedule": "linear", "min_lr_ratio": 0.05, "weight_decay": 0.05, "ema_decay": 0.995,
                  "log_every": max(1, steps // 50), "sample_every": max(1, steps // 6), "save_every": steps,
                  "resume": "never"},
    })


def real_images(num: int, *, split: str, image_size: int,
                style: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) in [-1, 1] and labels of a split of the shapes drawn in ``style`` (None: the quickstart's)."""
    from artok.data import ProceduralShapes
    from artok.data.transforms import pil_to_tensor

    ds = ProceduralShapes(num_samples=num, image_size=image_size, seed=0 if split == "train" else 1,
                          style=style or STYLE)
    pairs = [ds[i] for i in range(num)]
    return torch.stack([pil_to_tensor(img) for img, _ in pairs]), torch.tensor([y for _, y in pairs])


def run_quickstart(out: str | Path = "artok-quickstart", *, minutes: float = 10.0, seed: int = 0,
                   num_images: int = 20000, encode_images: int | None = None, samples_per_class: int = 50,
                   progress: bool = True) -> dict:
    """Run every stage; returns the metrics (also in ``out/metrics.json``) and writes ``out/report.html``."""
    from artok.data import ProceduralShapes
    from artok.data.builtin import PROCEDURAL_CLASSES
    from artok.data.encode import ImageSource, encode_dataset
    from artok.pipeline import from_pretrained
    from artok.metrics.classifier import accuracy, per_class_accuracy, train_classifier
    from artok.training.generator_trainer import train_generator
    from artok.training.tokenizer_trainer import train_tokenizer

    if minutes <= 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(minutes, time.time())
    device = device_name()
    tok_cfg = tokenizer_config(TOKENIZER_PRESET)
    size, classes = tok_cfg.image_size, len(PROCEDURAL_CLASSES)
    print(f"artok quickstart: {minutes:g} min budget on {device}; centred procedural shapes ({classes} classes, "
          f"{size} px); writing to {out}", flush=True)

    # 1. tokenizer ------------------------------------------------------------------------------------------
    batch = TOKENIZER_BATCH
    steps = probe_steps(_tokenizer_probe(batch, device), budget.seconds("tokenizer") * 0.85)
    banner(1, f"training the tokenizer: about {steps} steps of {batch} images "
              f"(≈ {budget.seconds('tokenizer') / 60:.1f} min)", budget)
    tcfg = tokenizer_recipe(tok_cfg, out / "tokenizer", minutes=budget.seconds("tokenizer") / 60, steps=steps,
                            seed=seed, num_images=num_images)
    tok_result = train_tokenizer(tcfg, progress=progress)
    tok = from_pretrained(out / "tokenizer" / "tokenizer").to(device)

    # 2. encode ---------------------------------------------------------------------------------------------
    if encode_images is None:  # as many as fit the stage's share, between 500 and 8000
        probe = ImageSource(ProceduralShapes(num_samples=64, image_size=size, seed=seed, style=STYLE), size, "none")
        t = time.perf_counter()
        with torch.no_grad():
            tok.tokenize(torch.stack([probe[i][0] for i in range(64)]).to(device))
        rate = 64 / (time.perf_counter() - t)
        encode_images = int(min(8000, max(500, rate * budget.seconds("encode"))))
    banner(2, f"encoding {encode_images} images to token shards", budget)
    source = ProceduralShapes(num_samples=encode_images, image_size=size, seed=seed, style=STYLE)
    t = time.time()
    manifest = encode_dataset(tok, ImageSource(source, size, "none"), out / "tokens", image_size=size,
                              shard_size=2048, batch_size=128, source=STYLE_SOURCES[STYLE], overwrite=True,
                              progress=progress)
    encode_seconds = time.time() - t
    shard_bytes = sum((out / "tokens" / s["name"]).stat().st_size for s in manifest["shards"])

    # 3. classifier on real images (scores the samples) ----------------------------------------------------
    banner(3, "training a classifier on real images (to score the samples)", budget)
    train_x, train_y = real_images(CLASSIFIER_IMAGES, split="train", image_size=size)
    test_x, test_y = real_images(1000, split="test", image_size=size)
    # a metric, so trained the same whatever the budget (its accuracy on real images is reported as a check)
    classifier = train_classifier(train_x, train_y, num_classes=classes, steps=CLASSIFIER_STEPS, batch_size=64,
                                  device=device, progress=progress, seed=0)
    real_accuracy = accuracy(classifier, test_x, test_y)
    with torch.no_grad():  # the ceiling the tokenizer sets: what the classifier makes of its reconstructions
        recs = torch.cat([tok.detokenize(tok.tokenize(test_x[i:i + 250].to(device))).cpu()
                          for i in range(0, len(test_x), 250)])
    reconstruction_accuracy = accuracy(classifier, recs, test_y)

    # 4. generator ------------------------------------------------------------------------------------------
    batch = GENERATOR_BATCH
    # what the earlier stages left, less a reserve for sampling, the FID features and the report
    reserve = 0.06 * 60 * minutes
    seconds = max(20.0, 60 * minutes - reserve - budget.elapsed())
    steps = probe_steps(_generator_probe(batch, device), seconds * 0.85)
    banner(4, f"training the generator: about {steps} steps of {batch} token maps (≈ {seconds / 60:.1f} min)", budget)
    gcfg = generator_recipe(generator_config(GENERATOR_PRESET), out / "tokenizer" / "tokenizer", out / "tokens",
                            out / "generator", minutes=seconds / 60, steps=steps, seed=seed, classes=classes)
    curve_draws = max(1, CURVE_SAMPLES // classes)
    gen_result = train_generator(gcfg, progress=progress,
                                 evaluate=class_scorer(classifier, classes, curve_draws, seed=seed, device=device))

    # 5. samples --------------------------------------------------------------------------------------------
    banner(5, f"sampling {samples_per_class} images per class and scoring them", budget)
    pipeline = from_pretrained(out / "generator" / "pipeline").to(device)
    samples, labels = sample_per_class(pipeline.generator.eval(), pipeline.tokenizer.eval(), classes,
                                       samples_per_class, seed=seed, device=device)
    sample_acc = accuracy(classifier, samples, labels)
    per_class = per_class_accuracy(classifier, samples, labels, classes)
    # FID against twice as many test images as samples (at most the 1,000 held out), and the floor: as many real
    # training images as samples, against the same test images
    quality = sample_quality(classifier, samples, train_x[:len(samples)], test_x[:2 * len(samples)])
    shown = samples.view(classes, samples_per_class, *samples.shape[1:])[:, :10].flatten(0, 1)  # ≤ 10 a row
    grid_path = save_class_grid(shown, classes, out / "samples_per_class.png")

    # 6. report ---------------------------------------------------------------------------------------------
    banner(6, "writing the report", budget)
    tok_eval = tok_result.eval or {}
    metrics = {
        "minutes_budget": minutes, "minutes_used": budget.elapsed() / 60, "device": device,
        "tokenizer": {"steps": tok_result.step, "psnr": tok_eval.get("psnr"), "ssim": tok_eval.get("ssim"),
                      "codebook_usage_per_scale": {f"{s['scale']}x{s['scale']}": s["usage"]
                                                   for s in tok_eval.get("scales", [])},
                      "perplexity_per_scale": {f"{s['scale']}x{s['scale']}": s["perplexity"]
                                               for s in tok_eval.get("scales", [])}},
        "encode": {"images": encode_images, "seconds": encode_seconds,
                   "images_per_second": encode_images / max(encode_seconds, 1e-9),
                   "bytes_per_image": shard_bytes / max(1, manifest["num_records"])},
        "generator": {"steps": gen_result.step, "final_loss": gen_result.final_loss,
                      "class_accuracy_curve": accuracy_curve(out / "generator" / "metrics.jsonl"),
                      "curve_samples_per_class": curve_draws},
        "samples": {"per_class": samples_per_class, "class_accuracy": sample_acc,
                    "class_accuracy_per_class": dict(zip(PROCEDURAL_CLASSES, per_class)),
                    "classifier_accuracy_on_real_images": real_accuracy,
                    "classifier_accuracy_on_reconstructions": reconstruction_accuracy, "chance": 1 / classes,
                    **quality},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from artok.recipes.report import write_report

    report = write_report(out, metrics, sample_grid=grid_path, class_names=PROCEDURAL_CLASSES)
    print(f"\ndone in {budget.elapsed() / 60:.1f} min.\n  report:           {report}\n  samples per class: {grid_path}"
          f"\n  reconstructions:  {latest(out / 'tokenizer' / 'samples')}\n  pipeline:         "
          f"{out / 'generator' / 'pipeline'} (artok sample / artok eval generator)\n  metrics:          "
          f"{out / 'metrics.json'}")
    print(f"  tokenizer PSNR {fmt(metrics['tokenizer']['psnr'])} dB; sample class accuracy {sample_acc:.1%} "
          f"(real images: {real_accuracy:.1%}, chance {1 / classes:.0%})")
    return metrics


def fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def latest(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.png"))
    return found[-1] if found else None


@torch.no_grad()
def sample_per_class(gen, tok, classes: int, per_class: int, *, seed: int, device: str, cfg_scale: float = CFG_SCALE,
                     top_k: int = TOP_K, top_p: float = 0.0, acceleration=None,
                     outputs: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of every class, class by class, in batches of 100 seeded seed + offset
    (``acceleration``: ``artok.sampling.Acceleration`` or None). ``outputs``, when given a list, receives each
    batch's ``GenerationOutput`` (ids, and HART's residual)."""
    from artok.sampling import generate

    labels = torch.arange(classes).repeat_interleave(per_class)
    images = []
    for i in range(0, len(labels), 100):
        rng = torch.Generator(device=device).manual_seed(seed + i)
        out = generate(gen, tok, labels[i:i + 100].to(device), cfg_scale=cfg_scale, top_k=top_k, top_p=top_p,
                       generator=rng, acceleration=acceleration)
        images.append(out.images.cpu())
        if outputs is not None:
            outputs.append(out)
    return torch.cat(images), labels


def sample_quality(classifier, samples: torch.Tensor, real_train: torch.Tensor, real_test: torch.Tensor) -> dict:
    """FID, precision and recall of the samples against the test images, and the FID of as many real training
    images (the floor a perfect generator would reach at these sizes), on the scoring classifier's pooled
    features (64-d): the Inception network costs about 0.2 s an image on a 2-core CPU, more than the budget
    has; ``benchmarks/generator_quality.py`` gives the Inception FID of a pipeline."""
    from artok.metrics.fid import frechet_distance
    from artok.metrics.generation import precision_recall

    ref, fake, real = (classifier_features(classifier, x) for x in (real_test, samples, real_train))
    precision, recall = precision_recall(ref, fake)
    return {"fid": frechet_distance(fake, ref), "fid_real_train": frechet_distance(real, ref), "precision": precision,
            "recall": recall, "fid_reference_images": len(ref), "fid_features": "scoring classifier (64-d)"}


@torch.no_grad()
def classifier_features(classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The classifier's globally pooled last-stage features, (N, 64) float64."""
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(images[i:i + batch_size].to(device)).mean((2, 3)).double().cpu()
                      for i in range(0, len(images), batch_size)])


def class_scorer(classifier, classes: int, per_class: int, *, seed: int, device: str):
    """The generator trainer's ``evaluate``: the class accuracy of ``per_class`` samples of every class."""
    from artok.metrics.classifier import per_class_accuracy

    def evaluate(gen, tok) -> dict:
        samples, labels = sample_per_class(gen, tok, classes, per_class, seed=seed + 10_000, device=device)
        scores = per_class_accuracy(classifier, samples, labels, classes)
        return {"sample_accuracy": sum(scores) / len(scores), "sample_accuracy_min_class": min(scores)}

    return evaluate


def accuracy_curve(path: Path) -> list[dict]:
    """[{step, sample_accuracy, sample_accuracy_min_class}] from a generator run's metrics.jsonl."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in ("step", "sample_accuracy", "sample_accuracy_min_class")}
            for r in records if "sample_accuracy" in r]


def save_class_grid(images: torch.Tensor, classes: int, path: Path) -> Path:
    from artok.training.report import class_grid
    from artok.training.report import save_grid

    return save_grid(class_grid(images, rows=classes), path)
