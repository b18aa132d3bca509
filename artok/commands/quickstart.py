"""``artok quickstart``: train a tokenizer, encode, train a generator, sample and report, on built-in data."""
from __future__ import annotations


def run(args) -> int:
    from artok.recipes.quickstart import run_quickstart

    if args.samples_per_class < 1:
        raise SystemExit(f"artok quickstart: --samples-per-class must be >= 1, got {args.samples_per_class}")
    run_quickstart(args.out, minutes=args.minutes, seed=args.seed, samples_per_class=args.samples_per_class,
                   progress=not args.no_progress)
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "quickstart", formatter_class=formatter_class,
        help="the whole job on built-in data in ~10 min: tokenizer, encoding, generator, samples, report",
        description="Train a small multi-scale tokenizer on centred procedural shapes (10 classes, no download), "
                    "encode them to token shards, train a small next-scale generator, sample a grid per class and "
                    "write a report (report.html / report.md) with reconstructions, samples, loss curves and metrics.",
        epilog="example:\n  artok quickstart --out artok-quickstart --minutes 10")
    p.add_argument("--out", default="artok-quickstart", help="run directory")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget, split over the stages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-class", type=int, default=50,
                   help="samples drawn per class and scored by the classifier (the grid shows up to 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
