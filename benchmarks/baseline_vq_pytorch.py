"""The plain-loop baseline that artok's tokenizer recipes must beat: a small conv autoencoder (~0.7 M parameters)
and vector-quantize-pytorch's ``HierarchicalVQ`` (VAR-style multi-scale residual VQ) with its defaults (k-means
init, EMA decay 0.99, dead-code threshold 2, one shared codebook, φ ratio 0.5), trained with L1 + 0.25 x
commitment, Adam 1e-3 at a constant rate, batch 64, for a wall-clock budget. It is the ~100-line loop a user
would write first, kept outside the package on purpose.

    pip install vector-quantize-pytorch
    python benchmarks/export_images.py fashion-mnist data/fashion-mnist-32
    python benchmarks/baseline_vq_pytorch.py data/fashion-mnist-32/train data/fashion-mnist-32/test --minutes 10

It evaluates on the test folder as ``artok eval tokenizer`` does (PSNR per image on [0, 1], then the mean;
codes used at least once per scale / codebook size; PSNR of the decoding of each prefix of scales) and prints
one table row (also written with ``--json``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm


def load_folder(root: str) -> torch.Tensor:
    """Every PNG/JPEG under root → uint8 (N, 3, H, W), in sorted order."""
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no images under {root}")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in tqdm(files, desc=f"loading {root}", unit="img")]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        return x + self.body(x)


class AutoEncoder(nn.Module):
    """32 px → 8x8 latent of ``dim`` channels and back (two stride-2 stages, one residual block each side)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 4, 2, 1), ResBlock(128), nn.ReLU(), nn.Conv2d(128, dim, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, 128, 3, padding=1), ResBlock(128), nn.ReLU(), nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 3, 3, padding=1))


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = (to_unit(x) - to_unit(y)).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate(net, vq, images: torch.Tensor, scales, codebook_size: int, batch: int = 250) -> dict:
    net.eval(), vq.eval()
    used = [torch.zeros(codebook_size, dtype=torch.bool) for _ in scales]
    sums = [0.0] * len(scales)  # PSNR after each prefix of scales; the last is the full reconstruction
    for i in range(0, len(images), batch):
        x = images[i: i + batch].float() / 127.5 - 1
        _, ids, _ = vq(net.encoder(x))
        for k, idx in enumerate(ids):
            used[k][idx.flatten()] = True
        for k in range(len(scales)):
            kept = [idx if j <= k else torch.full_like(idx, -1) for j, idx in enumerate(ids)]
            rec = net.decoder(vq.get_output_from_indices(kept)).clamp(-1, 1)
            sums[k] += float(psnr(rec, x).sum())
    n = len(images)
    return {"images": n, "psnr": sums[-1] / n, "prefix_psnr": [s / n for s in sums],
            "usage": [float(u.float().mean()) for u in used]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--codebook-size", type=int, default=512)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--test-images", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    from vector_quantize_pytorch import HierarchicalVQ

    torch.manual_seed(args.seed)
    train, test = load_folder(args.train), load_folder(args.test)
    if args.test_images:
        test = test[: args.test_images]
    net = AutoEncoder(args.dim)
    vq = HierarchicalVQ(dim=args.dim, codebook_size=args.codebook_size, scales=args.scales, accept_image_fmap=True,
                        commitment_weight=0.25)
    params = sum(q.numel() for q in net.parameters())
    opt = torch.optim.Adam([*net.parameters(), *vq.parameters()], lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    order, cursor, step = torch.randperm(len(train), generator=g), 0, 0
    start, budget = time.time(), args.minutes * 60
    bar = tqdm(total=math.ceil(budget), unit="s", desc="baseline", bar_format="{l_bar}{bar}| {n:.0f}/{total}s {postfix}")
    net.train(), vq.train()
    while time.time() - start < budget:
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=g), 0
        x = train[order[cursor: cursor + args.batch_size]].float() / 127.5 - 1
        cursor += args.batch_size
        quantized, _, commit = vq(net.encoder(x))
        rec = net.decoder(quantized)
        l1 = F.l1_loss(rec, x)
        loss = l1 + commit.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            bar.n = min(time.time() - start, budget)
            bar.set_postfix(step=step, l1=f"{l1.item():.4f}", img_s=f"{step * args.batch_size / (time.time() - start):.0f}")
            bar.refresh()
    bar.close()
    seconds = time.time() - start
    result = {"run": "baseline (vector-quantize-pytorch HierarchicalVQ)", "parameters": params, "steps": step,
              "batch_size": args.batch_size, "seconds": seconds, "images_per_second": step * args.batch_size / seconds,
              **evaluate(net, vq, test, args.scales, args.codebook_size)}
    usage = " / ".join(f"{u:.0%}" for u in result["usage"])
    prefix = " / ".join(f"{v:.1f}" for v in result["prefix_psnr"])
    print(f"| run | params | steps x {args.batch_size} | test PSNR | usage per scale | PSNR after each prefix |")
    print("|---|---|---|---|---|---|")
    print(f"| baseline | {params / 1e6:.2f} M | {step} | {result['psnr']:.2f} dB | {usage} | {prefix} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
