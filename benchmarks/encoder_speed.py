"""Token-reduction encoders against the plain ViT encoder, at the same latent grid.

For each encoder (ViT, ToMe constant and decreasing, MSViT, Quadformer quadtree with the pixel-variance
and the learned-feature scorer, STViT, and the semantic-token encoders VT, TokenLearner + TokenFuser and
Context Clusters) inside the same multi-scale tokenizer, this script

1. trains the tokenizer for the same short CPU run (same data, batches, seed and optimiser; loss = L1 +
   quantizer losses + the encoder's own losses, i.e. MSViT's compute target), then
2. measures on held-out crops: reconstruction PSNR of ``detokenize(tokenize(x))``, tokens entering
   attention (mean per layer and image; for Context Clusters, which has no attention, the cluster centres
   each point exchanges information through), encoder FLOPs per image (``torch.utils.flop_counter``), and encoder
   images/s (eval mode, no grad; the encoders are timed in interleaved rounds and the median is kept, so a
   busy shared CPU slows them alike).

Writes ``results.json``, ``results.md`` (the table), ``loss_curves.png``, ``reconstructions.png`` and
``token_layouts.png`` (where each encoder spent its tokens) under ``--out``, and the trained tokenizers under
``--out/models/`` (``--reuse`` measures them again without training). Images are random crops of
scikit-image's bundled photos (``artok.data.builtin.SkimagePhotos``).

    python benchmarks/encoder_speed.py --out runs/encoder_speed
    python benchmarks/encoder_speed.py --out runs/encoder_speed --reuse                 # re-measure only
    python benchmarks/encoder_speed.py --train-steps 0 --out runs/encoder_speed_only   # speed only
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from artok.config import (MixedScaleEncoderConfig, QuadtreeEncoderConfig, QuantizerConfig, SuperTokenEncoderConfig,
                          TokenizerConfig, TokenMergeEncoderConfig, ViTEncoderConfig)
from artok.config.encoders import (ContextClusterEncoderConfig, TokenLearnerEncoderConfig,
                                   VisualTransformerEncoderConfig)
from artok.data.builtin import SkimagePhotos
from artok.tokenizers import Tokenizer


def encoder_configs(args) -> dict:
    """Every encoder at the same patch size, width, depth and heads; the reduction knobs aim at roughly
    half of the plain ViT's attention tokens (STViT: a quarter, by construction). VT and TokenLearner keep
    the papers' handful of semantic tokens (16) at any grid, TokenLearner after half the blocks; Context
    Clusters places 2×2 centres in every 4×4 region of points (a quarter of the points)."""
    vit = dict(patch_size=args.patch_size, width=args.width, depth=args.depth, num_heads=args.num_heads)
    n = (args.image_size // args.patch_size) ** 2
    r = 3 * n // (4 * args.depth)  # merges 3/4 of the tokens by the last layer
    return {
        "vit": ViTEncoderConfig(**vit),
        "tome": TokenMergeEncoderConfig(**vit, merge_per_layer=r),
        "tome-decreasing": TokenMergeEncoderConfig(**vit, merge_per_layer=r, merge_schedule="decreasing"),
        "msvit": MixedScaleEncoderConfig(**vit, coarse_factor=2, target_fine_fraction=0.5),
        "quadtree": QuadtreeEncoderConfig(**vit, levels=2, token_budget=n // 2, scorer="pixel_variance"),
        "quadtree-feature": QuadtreeEncoderConfig(**vit, levels=2, token_budget=n // 2, scorer="feature"),
        "stvit": SuperTokenEncoderConfig(**vit, super_token_size=2),
        "vt": VisualTransformerEncoderConfig(**vit, num_tokens=16, recurrent=True),
        "tokenlearner": TokenLearnerEncoderConfig(**vit, num_tokens=16, learner_position=args.depth // 2),
        "coc": ContextClusterEncoderConfig(**vit, region_size=4, centres_per_side=2),
    }


def tokenizer_for(encoder, args) -> Tokenizer:
    side = args.image_size // args.patch_size
    scales = tuple(s for s in (1, 2, 4, 8, 16, 32, 64) if s <= side)
    return Tokenizer(TokenizerConfig(
        image_size=args.image_size, latent_channels=args.latent_channels, encoder=encoder,
        # EMA codebook with dead-code restarts: in a few hundred steps a gradient-trained codebook is still
        # collapsed onto a few codes and every encoder reconstructs the same blur
        quantizer=QuantizerConfig(kind="msrq", codebook_size=args.codebook_size, scales=scales,
                                  share_quant_resi=len(scales), ema_decay=0.99, dead_code_threshold=0.1)))


def crops(count: int, size: int, seed: int) -> torch.Tensor:
    """(count, 3, size, size) in [-1, 1]: random crops of the bundled photos, area-resized."""
    photos = SkimagePhotos(num_samples=count, min_side=size, seed=seed)
    out = torch.empty(count, 3, size, size)
    for i in range(count):
        image, _ = photos[i]
        array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
        out[i] = F.interpolate(array[None], size=(size, size), mode="area")[0]
    return out


def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per image, on [0, 1]."""
    mse = ((reconstruction - images) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


# ---------------------------------------------------------------------------------------------------------
# Training and measurement
# ---------------------------------------------------------------------------------------------------------

def train(name: str, tok: Tokenizer, pool: torch.Tensor, args) -> list[float]:
    generator = torch.Generator().manual_seed(args.seed)  # the same batches for every encoder
    opt = torch.optim.AdamW(tok.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, args.train_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    tok.train()
    curve = []
    bar = tqdm(range(args.train_steps), desc=f"train {name}", unit="step")
    for _ in bar:
        batch = pool[torch.randint(len(pool), (args.batch_size,), generator=generator)]
        out = tok(batch)
        l1 = (out.reconstruction - batch).abs().mean()
        loss = l1 + sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        schedule.step()
        curve.append(l1.item())
        bar.set_postfix(l1=f"{l1.item():.4f}", tokens=f"{float(out.stats['encoder_attention_tokens']):.0f}")
    return curve


@torch.no_grad()
def evaluate(tok: Tokenizer, images: torch.Tensor, batch_size: int) -> dict:
    tok.eval()
    values, recs, stats = [], [], {}
    for chunk in images.split(batch_size):
        rec = tok.detokenize(tok.tokenize(chunk))
        values.append(psnr(rec, chunk))
        recs.append(rec)
        for key, value in tok.encoder.last_stats.items():  # per-batch means → mean over all images
            stats[key] = stats.get(key, 0.0) + float(value) * len(chunk) / len(images)
    return {"psnr": torch.cat(values).mean().item(), "attention_tokens": stats["encoder_attention_tokens"],
            "fine_fraction": stats.get("encoder_fine_fraction"), "reconstructions": torch.cat(recs)}


@torch.no_grad()
def encoder_flops(tok: Tokenizer, images: torch.Tensor) -> float:
    """Encoder FLOPs per image (matrix multiplications, convolutions and attention), counted one image at
    a time: the algorithm's cost, without the padding a batch of MSViT images with different token counts
    needs (which the images/s figure does include). Attention runs on the math backend here: the counter
    has no formula for the fused CPU kernel and would count its QKᵀ and AV as zero."""
    tok.eval()
    total = 0
    for image in images.split(1):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            tok.encoder(image)
        total += counter.get_total_flops()
    return total / len(images)


@torch.no_grad()
def images_per_second(tokenizers: dict, images: torch.Tensor, rounds: int) -> dict:
    """Median encoder throughput over interleaved rounds (one timed batch per encoder per round)."""
    times = {name: [] for name in tokenizers}
    for tok in tokenizers.values():
        tok.eval()
        tok.encoder(images)  # warm-up
    for _ in tqdm(range(rounds), desc="timing encoders", unit="round"):
        for name, tok in tokenizers.items():
            start = time.perf_counter()
            tok.encoder(images)
            times[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def plot_losses(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        c = np.asarray(curve)
        k = max(1, len(c) // 20)
        smooth = np.convolve(c, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("L1 reconstruction loss (moving average)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_reconstructions(images: torch.Tensor, recs: dict, path: Path, count: int = 8) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"original": images[:count], **{k: v[:count] for k, v in recs.items()}}
    fig, axes = plt.subplots(len(rows), count, figsize=(1.4 * count, 1.5 * len(rows)), squeeze=False)
    for r, (name, batch) in enumerate(rows.items()):
        for c, image in enumerate(to_uint8(batch)):
            axes[r, c].imshow(image)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def save_layouts(tokenizers: dict, images: torch.Tensor, path: Path, args, count: int = 4) -> None:
    """Where each encoder spent its tokens: patch outlines (quadtree, MSViT), merged groups (ToMe), or the
    group of every patch (VT: the visual token it weighs most in; TokenLearner: its strongest branch; CoC:
    its cluster in the last block)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x = images[:count]
    p, g = args.patch_size, args.image_size // args.patch_size
    palette = torch.rand(g * g, 3, generator=torch.Generator().manual_seed(0))
    names = [n for n in tokenizers if n != "vit"]
    if not names:
        return
    fig, axes = plt.subplots(len(names), count, figsize=(2.2 * count, 2.3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        enc = tokenizers[name].encoder.eval()
        enc(x)
        for c in range(count):
            ax = axes[r, c]
            ax.imshow(to_uint8(x[c:c + 1])[0])
            if name.startswith("quadtree"):
                for row, col, side in enc.patches(x[c:c + 1])[0].tolist():
                    ax.add_patch(Rectangle((col - 0.5, row - 0.5), side, side, fill=False, lw=0.6, ec="yellow"))
            elif name == "msvit":
                s = enc.coarse_factor
                for (i, j), fine in np.ndenumerate(enc.last_fine_mask[c].numpy()):
                    step = p if fine else p * s
                    for di in range(0, p * s, step):
                        for dj in range(0, p * s, step):
                            ax.add_patch(Rectangle((j * p * s + dj - 0.5, i * p * s + di - 0.5), step, step,
                                                   fill=False, lw=0.6, ec="yellow"))
            elif name.startswith("tome") or name in ("vt", "tokenlearner", "coc"):
                groups = enc.last_destination if name.startswith("tome") else enc.last_assignment
                groups = palette[groups[c]].reshape(g, g, 3).numpy()
                ax.imshow(np.kron(groups, np.ones((p, p, 1))), alpha=0.55)
            else:  # stvit: the super-token regions
                step = p * enc.super_token_size
                for i in range(0, args.image_size, step):
                    for j in range(0, args.image_size, step):
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), step, step, fill=False, lw=0.6, ec="yellow"))
            ax.set_xticks([]), ax.set_yticks([])
        tokens = float(enc.last_stats["encoder_attention_tokens"])
        axes[r, 0].set_ylabel(f"{name}\n{tokens:.0f} tokens/layer", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/encoder_speed"))
    parser.add_argument("--encoders", nargs="+", default=None, help="subset of encoder names to run")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--latent-channels", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--pool", type=int, default=2048, help="training crops")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--speed-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="load the tokenizers a previous run saved under OUT/models/ instead of training")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    configs = encoder_configs(args)
    if args.encoders:
        unknown = sorted(set(args.encoders) - set(configs))
        if unknown:
            parser.error(f"unknown encoders {unknown}; choose from {sorted(configs)}")
        configs = {k: v for k, v in configs.items() if k in args.encoders or k == "vit"}
    print(f"building {args.pool} training and {args.eval_images} held-out crops of {args.image_size} px ...")
    pool = crops(args.pool, args.image_size, seed=args.seed) if args.train_steps and not args.reuse else None
    held_out = crops(args.eval_images, args.image_size, seed=args.seed + 1)

    tokenizers, curves, results = {}, {}, {}
    for name, cfg in configs.items():
        saved = args.out / "models" / name
        if args.reuse and (saved / "config.json").exists():
            tok = Tokenizer.from_pretrained(saved)
            curves[name] = json.loads((saved / "loss_curve.json").read_text())
            print(f"{name}: reusing the tokenizer trained in {saved}")
        else:
            torch.manual_seed(args.seed)
            tok = tokenizer_for(cfg, args)
            curves[name] = train(name, tok, pool, args) if args.train_steps else []
            tok.save_pretrained(saved)
            (saved / "loss_curve.json").write_text(json.dumps(curves[name]))
        tokenizers[name] = tok
        ev = evaluate(tok, held_out, args.speed_batch)
        results[name] = {"psnr_db": ev["psnr"], "attention_tokens": ev["attention_tokens"],
                         "encoder_flops": encoder_flops(tok, held_out[:args.speed_batch]),
                         "encoder_parameters": sum(p.numel() for p in tok.encoder.parameters()),
                         "reconstructions": ev["reconstructions"]}
        if ev["fine_fraction"] is not None:
            results[name]["fine_fraction"] = ev["fine_fraction"]
        with open(args.out / "progress.jsonl", "a") as progress:  # survives an interrupted run
            row = {k: v for k, v in results[name].items() if k != "reconstructions"}
            progress.write(json.dumps({"encoder": name, **row, "final_l1": curves[name][-10:]}) + "\n")
    speed = images_per_second(tokenizers, held_out[:args.speed_batch], args.rounds)

    base = results["vit"]
    rows = []
    header = ("| encoder | tokens in attention | vs ViT | encoder GFLOPs/img | vs ViT | images/s | vs ViT | "
              f"PSNR after {args.train_steps} steps (dB) |")
    rows += [header, "|" + "---|" * 8]
    for name, r in results.items():
        r["images_per_second"] = speed[name]
        rows.append(f"| {name} | {r['attention_tokens']:.1f} | {r['attention_tokens'] / base['attention_tokens']:.2f} "
                    f"| {r['encoder_flops'] / 1e9:.4f} | {r['encoder_flops'] / base['encoder_flops']:.2f} "
                    f"| {speed[name]:.0f} | {speed[name] / speed['vit']:.2f} | {r['psnr_db']:.2f} |")
    n = (args.image_size // args.patch_size) ** 2
    setting = (f"{args.image_size} px images, patch {args.patch_size} ({n} fine tokens), width {args.width}, depth "
               f"{args.depth}, {args.num_heads} heads; msrq codebook {args.codebook_size} (EMA); {args.train_steps} AdamW "
               f"steps of batch {args.batch_size} at lr {args.lr}; images/s: batch {args.speed_batch}, median of "
               f"{args.rounds} interleaved rounds on {torch.get_num_threads()} CPU threads")
    table = "\n".join(rows)
    (args.out / "results.md").write_text(f"{setting}\n\n{table}\n")
    json_results = {k: {kk: vv for kk, vv in v.items() if kk != "reconstructions"} for k, v in results.items()}
    (args.out / "results.json").write_text(json.dumps({"setting": vars(args) | {"out": str(args.out)},
                                                       "results": json_results}, indent=2))
    if args.train_steps:
        plot_losses(curves, args.out / "loss_curves.png")
    save_reconstructions(held_out, {k: v["reconstructions"] for k, v in results.items()},
                         args.out / "reconstructions.png")
    save_layouts(tokenizers, held_out, args.out / "token_layouts.png", args)
    print(f"\n{setting}\n\n{table}\n\nwritten to {args.out}/ (results.md, results.json, loss_curves.png, "
          f"reconstructions.png, token_layouts.png, models/)")


if __name__ == "__main__":
    main()
