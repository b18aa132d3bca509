"""Throughput of the jobs users spend their hours on, side by side with the official VAR code on identical weights.

    python benchmarks/throughput.py --official PATH/TO/VAR --jobs sample encode --threads 2
    python benchmarks/throughput.py --official PATH/TO/VAR --device cuda --dtype bf16 --jobs sample encode \
        --depth 16 --batch-size 64

PATH/TO/VAR is a checkout of github.com/FoundationVision/VAR (the repository root, which holds ``models/`` and
``dist.py``); it is imported from that path, never copied. Without ``--official`` the official columns are
left empty. Both sides get the same random weights: the official models are built and initialised by their
own code, and artok loads their state dicts through ``artok.convert``.

Jobs:
  sample  end-to-end class-conditional sampling (``autoregressive_infer_cfg`` vs ``artok.sampling.generate``),
          scales 1…16 (256 px), cfg 1.5, top-k 900, top-p 0.96 by default; also checks that greedy ids
          (top-k 1) are identical.
  encode  images → multi-scale ids (``img_to_idxBl`` vs ``Tokenizer.tokenize``), VQVAE ch 160, V 4096;
          checks the ids are identical.

The two sides are timed alternately (official, artok, official, artok, ...) and the median of each is
reported, so a busy machine slows both alike. Peak memory is the CUDA allocator's peak per job on a GPU;
on CPU it is left out (the process's resident peak would count both models).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

SCALES_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, *, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, called in turn ``repeats`` times after one warm-up each."""
    times = {name: [] for name in fns}
    for i in range(repeats + 1):
        for name, fn in fns.items():
            if fn is None:
                continue
            sync(device)
            t0 = time.perf_counter()
            fn(i)
            sync(device)
            if i:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items() if t}


def peak_mib(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn(0)
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def official_models(path: Path, *, depth: int, device: torch.device, seed: int):
    """The official VQVAE and VAR with their own initialisation (models/__init__.py's build_vae_var without its
    global patch of ``reset_parameters``, so every weight is initialised)."""
    sys.path.insert(0, str(path))
    from models import VAR, VQVAE  # noqa: E402  (the official repository)

    torch.manual_seed(seed)
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4,
                v_patch_nums=SCALES_256).to(device)
    var = VAR(vae_local=vae, num_classes=1000, depth=depth, embed_dim=depth * 64, num_heads=depth, drop_rate=0.,
              attn_drop_rate=0., drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False,
              cond_drop_rate=0.1, attn_l2_norm=True, patch_nums=SCALES_256, flash_if_available=True,
              fused_if_available=True).to(device)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    # the official VAE is built untrained: give its codebook a spread so nearest-code search is not degenerate
    with torch.no_grad():
        vae.quantize.embedding.weight.uniform_(-1 / 4096, 1 / 4096)
    return vae.eval(), var.eval()


def artok_models(vae, var, *, device: torch.device):
    from artok import convert

    tok = convert.var_vqvae({k: v.detach().cpu() for k, v in vae.state_dict().items()}, scales=SCALES_256)
    gen = convert.var_transformer({k: v.detach().cpu() for k, v in var.state_dict().items()}, scales=SCALES_256)
    return tok.to(device).eval(), gen.to(device).eval()


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def job_sample(args, device, dtype, vae, var, tok, gen) -> list[str]:
    from artok.sampling import generate

    B = args.batch_size
    labels = torch.arange(B, device=device) % 1000
    rows = []

    def official(i, top_k=args.top_k, top_p=args.top_p):
        with torch.inference_mode(), autocast(device, dtype):
            return var.autoregressive_infer_cfg(B, labels, g_seed=i, cfg=args.cfg, top_k=top_k, top_p=top_p)

    def ours(i, top_k=args.top_k, top_p=args.top_p):
        rng = torch.Generator(device=device).manual_seed(i)
        with torch.inference_mode():
            return generate(gen, tok, labels, cfg_scale=args.cfg, top_k=top_k, top_p=top_p, generator=rng,
                            dtype=dtype).images

    # greedy ids: artok's must be the official ones (the images then agree to float rounding)
    if dtype == torch.float32:
        img_off = official(0, top_k=1, top_p=0.0)
        img_ours = (ours(0, top_k=1, top_p=0.0) + 1) / 2
        greedy = f"greedy images max diff {(img_off - img_ours).abs().max().item():.1e}"
    else:
        greedy = "greedy check at fp32 only"
    t = interleaved({"official": official if vae is not None else None, "artok": ours},
                    repeats=args.repeats, device=device)
    rows.append(row(f"sampling end to end: depth {args.depth}, 256 px, scales 1…16, batch {B}, cfg {args.cfg}, "
                    f"top-k {args.top_k}, top-p {args.top_p}, {args.dtype}", B, t, peak_mib(ours, device), greedy))
    return rows


def job_encode(args, device, dtype, vae, var, tok, gen) -> list[str]:
    B = args.encode_batch_size
    torch.manual_seed(1)
    images = torch.rand(B, 3, 256, 256, device=device) * 2 - 1

    def official(i):
        with torch.inference_mode(), autocast(device, dtype):
            return vae.img_to_idxBl(images)

    def ours(i):
        with torch.inference_mode(), autocast(device, dtype):
            return tok.tokenize(images)

    same = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(official(0), ours(0)))
    t = interleaved({"official": official, "artok": ours}, repeats=args.repeats, device=device)
    return [row(f"encoding: VQVAE ch 160, V 4096, 256 px, batch {B}, {args.dtype}", B, t, peak_mib(ours, device),
                "ids identical" if same else "IDS DIFFER")]


def row(job: str, batch: int, t: dict[str, float], peak: float | None, note: str) -> str:
    ours = batch / t["artok"]
    off = batch / t["official"] if "official" in t else None
    ratio = f"{ours / off:.2f}×" if off else ""
    mem = f"{peak:.0f} MiB" if peak is not None else ""
    return f"| {job} | {f'{off:.3f}' if off else ''} | {ours:.3f} | {ratio} | {mem} | {note} |"


JOBS = {"sample": job_sample, "encode": job_encode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=None, help="root of a FoundationVision/VAR checkout")
    ap.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--encode-batch-size", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top-k", type=int, default=900)
    ap.add_argument("--top-p", type=float, default=0.96)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    if args.official is None:
        raise SystemExit("--official PATH is needed: the artok models are loaded from the official ones' weights")
    vae, var = official_models(args.official, depth=args.depth, device=device, seed=0)
    tok, gen = artok_models(vae, var, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}")
    print("| job | official img/s | artok img/s | ratio | artok peak memory | check |")
    print("|---|---|---|---|---|---|")
    for job in args.jobs:
        for line in JOBS[job](args, device, dtype, vae, var, tok, gen):
            print(line, flush=True)


if __name__ == "__main__":
    main()
