"""``artok eval tokenizer CHECKPOINT --data ...``: reconstruction metrics (PSNR, SSIM, LPIPS, rFID) and
codebook usage and perplexity per scale, as a readable table and JSON.

Each evaluation target registers a subcommand of ``artok eval`` (``TARGETS``), as ``artok train`` does.
"""
from __future__ import annotations

import json
from pathlib import Path

from artok.commands.targets import lazy_target, register_with_targets


def load_tokenizer(path: str):
    """A tokenizer from a tokenizer folder, a pipeline folder, or a training run folder (its tokenizer/)."""
    from artok.pipeline import from_pretrained
    from artok.tokenizers import Tokenizer
    from artok.checkpoint import CONFIG_NAME

    p = Path(path).expanduser()
    if p.is_dir() and not (p / CONFIG_NAME).exists() and (p / "tokenizer" / CONFIG_NAME).exists():
        p = p / "tokenizer"  # a training run directory
    model = from_pretrained(p if p.exists() else path)
    model = getattr(model, "tokenizer", model)  # a pipeline
    if not isinstance(model, Tokenizer):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a tokenizer")
    return model


def run_tokenizer(args) -> int:
    import torch

    from artok.data import build_dataset, data_config_from_spec, evaluation_loader
    from artok.metrics import evaluate_tokenizer, format_table
    from artok.metrics.evaluate import check_metrics

    metrics = check_metrics(m.strip() for m in args.metrics.split(",") if m.strip())
    tokenizer = load_tokenizer(args.checkpoint)
    data = data_config_from_spec(args.data, split=args.split, num_workers=args.num_workers,
                                 num_samples=args.num_images or 10000)
    dataset = build_dataset(data, image_size=tokenizer.image_size, train=False, seed=args.seed)
    loader = evaluation_loader(dataset, batch_size=args.batch_size, num_images=args.num_images or None,
                               num_workers=args.num_workers)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_tokenizer(tokenizer, loader, metrics=metrics, lpips_weights=args.lpips_weights,
                                 inception_weights=args.inception_weights, device=device,
                                 progress=not args.no_progress, total=len(loader))
    results = {"checkpoint": str(args.checkpoint), "data": args.data, **results}
    print(f"checkpoint      {args.checkpoint}\ndata            {args.data}")
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


def register_tokenizer(targets, formatter_class) -> None:
    from artok.metrics import METRICS

    p = targets.add_parser(
        "tokenizer", formatter_class=formatter_class, help="reconstruction metrics of a tokenizer",
        description="Tokenize and detokenize images and compare: PSNR, SSIM, LPIPS, rFID, and codebook usage and "
                    "perplexity per scale over the evaluated images.",
        epilog="example:\n  artok eval tokenizer runs/tiny-var/tokenizer --data fashion-mnist --num-images 1000 "
               "--metrics psnr,ssim,rfid,usage --json eval.json")
    p.add_argument("checkpoint", help="tokenizer, pipeline or training-run directory")
    p.add_argument("--data", required=True, help="image folder, tar shards, hf:NAME or a built-in dataset "
                                                 "(procedural, procedural-centred, fashion-mnist, skimage)")
    p.add_argument("--split", default="test", help="split of datasets that have one")
    p.add_argument("--num-images", type=int, default=1000, help="images to evaluate (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--lpips-weights", help="torchvision VGG16 ImageNet weights for LPIPS (offline machines)")
    p.add_argument("--inception-weights", help="TorchScript Inception feature extractor for rFID")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of procedurally generated evaluation data")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_tokenizer)


TARGETS = [register_tokenizer, lazy_target("artok.commands.eval_generator", "register_generator")]


def register(sub, formatter_class) -> None:
    register_with_targets(sub, "eval", "evaluate a model (tokenizer, ...)", TARGETS, formatter_class)
