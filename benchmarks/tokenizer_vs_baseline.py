"""artok's tokenizer recipe against the plain-loop baseline (``baseline_vq_pytorch.py``) on the same PNG folders,
the same wall-clock budget and the same test images; prints one markdown table.

    python benchmarks/tokenizer_vs_baseline.py --datasets fashion-mnist --minutes 10
    python benchmarks/tokenizer_vs_baseline.py --datasets skimage procedural --minutes 10 --side-by-side

Each dataset is exported once with ``export_images.py`` into ``--data-root/<name>-32/{train,test}``. By default
the runs go one after the other, each with every core; ``--side-by-side`` runs the two trainings of a dataset
at once, one thread each (a fair comparison in half the time, at lower absolute figures). The table rows
come from ``artok eval tokenizer --metrics psnr,usage,prefix`` and the baseline's own evaluation (the same
definitions: PSNR per image on [0, 1], then the mean; codes used / codebook size per scale; PSNR after each
prefix of scales). Runs go to ``--out/<dataset>/{baseline,artok}``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXPORTED = {"fashion-mnist": "fashion-mnist-32", "skimage": "skimage-32", "procedural": "shapes-32"}


def export(dataset: str, root: Path) -> Path:
    folder = root / EXPORTED[dataset]
    if not (folder / "test").is_dir():
        subprocess.run([sys.executable, str(HERE / "export_images.py"), dataset, str(folder)], check=True)
    return folder


def commands(dataset: str, folder: Path, out: Path, args) -> tuple[list[str], list[str], list[str]]:
    baseline = [sys.executable, str(HERE / "baseline_vq_pytorch.py"), str(folder / "train"), str(folder / "test"),
                "--minutes", str(args.minutes), "--json", str(out / "baseline.json")]
    if args.eval_images:
        baseline += ["--test-images", str(args.eval_images)]
    train = [sys.executable, "-m", "artok.cli", "train", "tokenizer", "--config", str(args.recipe),
             "--data", str(folder / "train"), "--out-dir", str(out / "artok"), f"--train.max_minutes={args.minutes}",
             "--train.resume=never", "--no-progress"]
    evaluate = [sys.executable, "-m", "artok.cli", "eval", "tokenizer", str(out / "artok"), "--data",
                str(folder / "test"), "--num-images", str(args.eval_images), "--metrics", "psnr,ssim,usage,prefix",
                "--json", str(out / "artok.json"), "--no-progress"]
    return baseline, train, evaluate


def run(cmds: list[list[str]], logs: list[Path], threads: int | None) -> None:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    procs = []
    for cmd, log in zip(cmds, logs):
        print("$", " ".join(cmd), flush=True)
        procs.append(subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    for p, log in zip(procs, logs):
        if p.wait() != 0:
            raise SystemExit(f"failed: see {log}")


def row(name: str, steps: int, batch: int, psnr: float, usage: list[float], prefix: list[float]) -> str:
    return (f"| {name} | {steps} x {batch} | {psnr:.2f} dB | {' / '.join(f'{u:.0%}' for u in usage)} | "
            f"{' / '.join(f'{p:.1f}' for p in prefix)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["fashion-mnist"], choices=sorted(EXPORTED))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "recipes" / "fashion-mnist-tokenizer.yaml"))
    p.add_argument("--data-root", default=str(ROOT / "data"))
    p.add_argument("--out", default=str(ROOT / "runs" / "tokenizer-vs-baseline"))
    p.add_argument("--eval-images", type=int, default=0, help="test images to evaluate (0: all)")
    p.add_argument("--side-by-side", action="store_true", help="train both at once, one thread each")
    args = p.parse_args()
    lines = ["| dataset, run | steps x batch | test PSNR | usage 1x1 / 2x2 / 4x4 / 8x8 | PSNR after each prefix |",
             "|---|---|---|---|---|"]
    for dataset in args.datasets:
        folder = export(dataset, Path(args.data_root))
        out = Path(args.out) / dataset
        out.mkdir(parents=True, exist_ok=True)
        baseline, train, evaluate = commands(dataset, folder, out, args)
        if args.side_by_side:
            run([baseline, train], [out / "baseline.log", out / "artok-train.log"], threads=1)
        else:
            run([baseline], [out / "baseline.log"], threads=None)
            run([train], [out / "artok-train.log"], threads=None)
        run([evaluate], [out / "artok-eval.log"], threads=None)
        b = json.loads((out / "baseline.json").read_text())
        a = json.loads((out / "artok.json").read_text())
        steps = [json.loads(line) for line in (out / "artok" / "metrics.jsonl").read_text().splitlines()]
        batch = yaml.safe_load((out / "artok" / "config.yaml").read_text())["train"]["batch_size"]
        lines.append(row(f"{dataset}: plain loop (vector-quantize-pytorch)", b["steps"], b["batch_size"], b["psnr"],
                         b["usage"], b["prefix_psnr"]))
        lines.append(row(f"{dataset}: artok recipe", steps[-1]["step"], batch, a["psnr"],
                         [s["usage"] for s in a["scales"]], [r["psnr"] for r in a["prefix_psnr"]]))
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
