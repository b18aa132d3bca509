"""`artok quickstart` over several seeds, one after the other, each with every core: one markdown table of what
each run's report says, and the mean and spread (min–max) of every column.

    python benchmarks/quickstart_seeds.py --seeds 0 1 2 --minutes 10 --out runs/quickstart-seeds

Runs already finished under ``--out/seed-N`` (a metrics.json there) are read, not run again; ``--rerun``
runs them anyway. The columns: the tokenizer's held-out PSNR; the scoring classifier's accuracy on the
tokenizer's reconstructions of real test images (the ceiling a generator of these ids can reach under that
classifier); the samples' class accuracy and its weakest class; sample FID against the test images and the
FID of as many real training images (the floor); precision and recall; the generator's steps.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

COLUMNS = [  # (header, path in metrics.json, format)
    ("tokenizer PSNR", ("tokenizer", "psnr"), "{:.2f} dB"),
    ("ceiling (recon. accuracy)", ("samples", "classifier_accuracy_on_reconstructions"), "{:.1%}"),
    ("class accuracy", ("samples", "class_accuracy"), "{:.1%}"),
    ("weakest class", ("samples", "weakest_class"), "{:.0%}"),
    ("FID", ("samples", "fid"), "{:.1f}"),
    ("FID, real train", ("samples", "fid_real_train"), "{:.1f}"),
    ("precision", ("samples", "precision"), "{:.2f}"),
    ("recall", ("samples", "recall"), "{:.2f}"),
    ("generator steps", ("generator", "steps"), "{:.0f}"),
    ("minutes", ("minutes_used",), "{:.1f}"),
]


def value(metrics: dict, path: tuple[str, ...]):
    if path == ("samples", "weakest_class"):
        return min(metrics["samples"]["class_accuracy_per_class"].values())
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def run(seed: int, minutes: float, out: Path, rerun: bool) -> dict:
    metrics = out / "metrics.json"
    if rerun or not metrics.exists():
        subprocess.run([sys.executable, "-m", "artok.cli", "quickstart", "--out", str(out), "--minutes", str(minutes),
                        "--seed", str(seed), "--no-progress"], check=True)
    return json.loads(metrics.read_text())


def table(results: dict[int, dict]) -> str:
    lines = ["| seed | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]

    def cell(v, fmt):
        return fmt.format(v) if isinstance(v, (int, float)) else "n/a"

    for seed, m in results.items():
        lines.append(f"| {seed} | " + " | ".join(cell(value(m, p), f) for _, p, f in COLUMNS) + " |")
    if len(results) > 1:
        summary = []
        for _, path, fmt in COLUMNS:
            vals = [v for v in (value(m, path) for m in results.values()) if isinstance(v, (int, float))]
            summary.append(f"{cell(sum(vals) / len(vals), fmt)} ({cell(min(vals), fmt)}–{cell(max(vals), fmt)})"
                           if vals else "n/a")
        lines.append("| mean (min–max) | " + " | ".join(summary) + " |")
    return "\n".join(lines)


def per_class(results: dict[int, dict]) -> str:
    names = list(next(iter(results.values()))["samples"]["class_accuracy_per_class"])
    lines = ["| class | " + " | ".join(f"seed {s}" for s in results) + " |", "|---" * (len(results) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{m['samples']['class_accuracy_per_class'][name]:.0%}"
                                                 for m in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default="runs/quickstart-seeds")
    p.add_argument("--rerun", action="store_true", help="run seeds whose metrics.json already exists again")
    args = p.parse_args()
    results = {seed: run(seed, args.minutes, Path(args.out) / f"seed-{seed}", args.rerun) for seed in args.seeds}
    print(f"\n`artok quickstart --minutes {args.minutes:g}`, seeds {' '.join(map(str, args.seeds))}:\n")
    print(table(results))
    print("\nClass accuracy per class:\n")
    print(per_class(results))


if __name__ == "__main__":
    main()
