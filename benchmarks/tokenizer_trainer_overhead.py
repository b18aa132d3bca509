"""What `artok train tokenizer` costs over a raw loop of the same net (issue 13: within 10%, on CPU).

The raw loop is the least a user could write with artok's model and loss: batches drawn from images already in
memory as a float tensor, ``tokenizer(x)``, ``TokenizerLoss.generator_loss``, backward, AdamW (the same parameter
groups, learning rate and betas). The trainer is ``train_tokenizer`` on the same config: data loading and
augmentation from the source, the LR schedule, gradient clipping, codebook statistics, logging. Its throughput is
the windowed ``images_per_second`` of ``metrics.jsonl`` (no grids, checkpoints or evaluation inside the timed
steps; the first window, with start-up, is left out). The two alternate ``--repeats`` times, so that a change in
what else the cores do hits both:

    python benchmarks/tokenizer_trainer_overhead.py --config configs/recipes/fashion-mnist-tokenizer.yaml \\
        --data data/fashion-mnist-32/train --steps 150 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def raw_loop(cfg, images: torch.Tensor, steps: int, seed: int) -> float:
    from artok.losses import TokenizerLoss
    from artok.pipeline import build_tokenizer
    from artok.training.optim import build_optimizer

    torch.manual_seed(seed)
    tok = build_tokenizer(cfg.tokenizer).train()
    loss_fn = TokenizerLoss(cfg.loss)
    t = cfg.train
    opt = build_optimizer(tok, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(seed)

    def step(i: int) -> None:
        x = images[torch.randint(0, len(images), (t.batch_size,), generator=g)]
        out = tok(x)
        loss, _ = loss_fn.generator_loss(out, x, step=i, tokenizer=tok, discriminator=None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up, untimed
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * t.batch_size / (time.perf_counter() - start)


def trainer(cfg, steps: int, out: Path) -> float:
    from artok.training.tokenizer_trainer import train_tokenizer

    log_every = max(1, steps // 5)
    run_cfg = cfg.replace(train=cfg.train.replace(
        out_dir=str(out), max_steps=steps, max_minutes=None, schedule_over="steps", log_every=log_every,
        sample_every=10 ** 9, save_every=10 ** 9, eval_images=0, trackers=("none",), resume="never"))
    train_tokenizer(run_cfg, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["images_per_second"] for r in records if "images_per_second" in r][1:]  # not the start-up one
    return statistics.mean(windows)


def with_data(cfg, setting: str):
    """cfg with ``KEY=VALUE[,KEY=VALUE]`` applied to its data section, as ``--data.KEY=VALUE`` overrides."""
    from artok.training.args import parse_overrides

    items = [f"--data.{kv}" for kv in setting.split(",") if kv]
    return cfg.override(parse_overrides(items)) if items else cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/recipes/fashion-mnist-tokenizer.yaml")
    p.add_argument("--data", default=None, help="--data as artok train takes it (default: the config's)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--pool", type=int, default=2048, help="images held in memory for the raw loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-settings", nargs="+", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="time the trainer once per setting of the data config, e.g. num_workers=0 num_workers=1 "
                        "preload=true (default: the config as it is)")
    a = p.parse_args()

    from artok.config import TokenizerTrainConfig
    from artok.data import build_dataset, data_config_from_spec

    cfg = TokenizerTrainConfig.from_yaml(a.config)
    if a.data:
        cfg = cfg.replace(data=data_config_from_spec(a.data, num_workers=cfg.data.num_workers,
                                                     preload=cfg.data.preload, pad_small=cfg.data.pad_small))
    dataset = build_dataset(cfg.data, image_size=cfg.tokenizer.image_size, train=False)
    images = torch.stack([dataset[(i, 0)]["image"] for i in range(min(a.pool, len(dataset)))])
    settings = a.data_settings or [""]
    raw, full = [], {w: [] for w in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            raw.append(raw_loop(cfg, images, a.steps, a.seed + r))
            print(f"repeat {r}: raw loop {raw[-1]:.1f} img/s", flush=True)
            for i, w in enumerate(settings):
                full[w].append(trainer(with_data(cfg, w), a.steps, Path(tmp) / f"run{r}-{i}"))
                print(f"repeat {r}: trainer {w or '(config)'}: {full[w][-1]:.1f} img/s", flush=True)
    print(f"\n{a.config}, batch {cfg.train.batch_size}, {a.steps} steps x {a.repeats}, "
          f"{torch.get_num_threads()} threads\n")
    print("| loop | images/s (each repeat) | median | / raw |\n|---|---|---|---|")
    print(f"| raw: tokenizer + loss + AdamW on images in memory | {' / '.join(f'{v:.1f}' for v in raw)} | "
          f"{statistics.median(raw):.1f} | 1.00 |")
    for w, values in full.items():
        described = ", ".join(f"`data.{kv.replace('=', ': ')}`" for kv in w.split(",") if kv) or "as configured"
        print(f"| `train_tokenizer`, {described} | {' / '.join(f'{v:.1f}' for v in values)} | "
              f"{statistics.median(values):.1f} | {statistics.median(values) / statistics.median(raw):.2f} |")
    print("\ntarget: train_tokenizer >= 0.90 of the raw loop")


if __name__ == "__main__":
    main()
