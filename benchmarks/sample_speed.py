"""Sampling speed: images/s and peak memory of ``artok.sampling.generate`` for a generator preset.

    python benchmarks/sample_speed.py --generator tiny-var --batch-size 16 --dtype fp32 bf16
    python benchmarks/sample_speed.py --generator var-d16 --batch-size 64 --dtype fp32 bf16 fp16 --device cuda

Weights are random (speed does not depend on them). Each dtype is timed in the same process, one after the
other, so their ratio is meaningful even on a busy machine. "end to end" includes the tokenizer's decoder;
"tokens only" stops at the token ids and latent. Peak memory is the CUDA allocator's peak on a GPU, and
the process's peak resident set size on CPU (which also counts Python and the weights).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

import artok
from artok.sampling import generate

TOKENIZER_FOR = {"var-d16": "var-vqvae-f16", "var-d20": "var-vqvae-f16", "var-d24": "var-vqvae-f16",
                 "var-d30": "var-vqvae-f16", "var-d36": "var-vqvae-f16-512", "tiny-var": "tiny-var-vqvae",
                 "tiny-raster": "tiny-vq"}


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(gen, tok, labels, *, dtype, repeats, decode, device, args) -> float:
    """Seconds per batch, the median of ``repeats`` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        rng = torch.Generator(device=device).manual_seed(i)
        sync(device)
        t0 = time.perf_counter()
        generate(gen, tok, labels, cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p, dtype=dtype,
                 generator=rng, decode=decode)
        sync(device)
        if i:  # the first run is warm-up
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--generator", default="tiny-var", choices=sorted(TOKENIZER_FOR), help="generator preset")
    p.add_argument("--tokenizer", default=None, help="tokenizer preset (default: the generator's pair)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"],
                   help="autocast dtypes, timed one after the other")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed batches per setting (median reported)")
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object per setting")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    tok = artok.build_tokenizer(args.tokenizer or TOKENIZER_FOR[args.generator]).to(device).eval()
    gen = artok.build_generator(args.generator).to(device).eval()
    labels = torch.arange(args.batch_size, device=device) % gen.num_classes
    weights_mib = peak_memory_mib(device)
    params = sum(p.numel() for p in gen.parameters())
    print(f"# {args.generator} ({params:,} parameters) + {args.tokenizer or TOKENIZER_FOR[args.generator]}"
          f" on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {args.batch_size}, cfg {args.cfg}, top-k {args.top_k}, top-p {args.top_p}, torch {torch.__version__}; "
          f"memory after building the models {weights_mib:.0f} MiB",
          file=sys.stderr if args.json else sys.stdout)
    if not args.json:
        print(f"{'dtype':6} {'images/s end to end':>20} {'images/s tokens only':>21} {'peak memory MiB':>16}")
    for name in args.dtype:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        full = time_batches(gen, tok, labels, dtype=name, repeats=args.repeats, decode=True, device=device, args=args)
        tokens = time_batches(gen, tok, labels, dtype=name, repeats=args.repeats, decode=False, device=device, args=args)
        row = {"generator": args.generator, "device": str(device), "dtype": name, "batch_size": args.batch_size,
               "images_per_s": args.batch_size / full, "images_per_s_tokens_only": args.batch_size / tokens,
               "peak_memory_mib": peak_memory_mib(device), "memory_after_build_mib": weights_mib}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{name:6} {row['images_per_s']:20.2f} {row['images_per_s_tokens_only']:21.2f} "
                  f"{row['peak_memory_mib']:16.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
