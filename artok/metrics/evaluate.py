"""Reconstruction evaluation of a tokenizer: PSNR, SSIM, LPIPS, rFID, codebook usage per scale, and the PSNR
of the decoding of each prefix of scales (what a next-scale generator has drawn after k scales)."""
from __future__ import annotations

from typing import Iterable

import torch
from tqdm.auto import tqdm

from artok.metrics.codebook import CodebookCounter
from artok.metrics.image import psnr, ssim

METRICS = ("psnr", "ssim", "lpips", "rfid", "usage", "prefix")


def check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric '{unknown[0]}'; choose from {', '.join(METRICS)}")
    return metrics


def prefix_reconstructions(tokenizer, ids: list[torch.Tensor]) -> list[torch.Tensor]:
    """The decoding of the first k scales' ids, for k = 1 .. K − 1 (the full decoding is ``reconstruct``'s):
    the cumulative quantized latent of those scales, decoded, discrete part only for hybrid tokenizers."""
    return [tokenizer.decode(tokenizer.ids_to_latent(ids[:k])) for k in range(1, len(ids))]


def reconstruct(tokenizer, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ids and the reconstruction a generator's output would decode to (hybrid: with the residual)."""
    ids = tokenizer.tokenize(images)
    if tokenizer.is_hybrid:
        return ids, tokenizer.detokenize(ids, residual=tokenizer.residual(images))
    return ids, tokenizer.detokenize(ids)


@torch.no_grad()
def evaluate_tokenizer(tokenizer, batches: Iterable[dict], *, metrics: Iterable[str] = METRICS,
                       lpips_weights: str | None = None, inception_weights: str | None = None,
                       device: str | torch.device = "cpu", progress: bool = True, total: int | None = None) -> dict:
    """Evaluate on ``batches`` of {"images": (B, 3, H, W) in [-1, 1]}; returns a JSON-ready dict.

    Networks for LPIPS and rFID are loaded before the first batch, so missing weights fail fast.
    """
    metrics = check_metrics(metrics)
    tokenizer = tokenizer.to(device).eval()
    lpips_net = inception = None
    if "lpips" in metrics:
        from artok.losses.perceptual import LPIPS

        lpips_net = LPIPS("vgg", backbone_weights=lpips_weights).to(device)
    if "rfid" in metrics:
        from artok.metrics.fid import InceptionFeatures

        inception = InceptionFeatures(inception_weights).to(device)
    counter = CodebookCounter(tokenizer.codebook_size, tokenizer.scales)
    sums = {m: 0.0 for m in ("psnr", "ssim", "lpips") if m in metrics}
    hybrid = tokenizer.is_hybrid
    if hybrid and "psnr" in sums:
        sums["psnr_discrete"] = 0.0  # the discrete-only decoding of a hybrid tokenizer, for comparison
    num_scales = len(tokenizer.scales)
    prefix_sums = [0.0] * num_scales if "prefix" in metrics and num_scales > 1 else []
    real_features, fake_features = [], []
    n = 0
    for batch in tqdm(batches, desc="evaluating", unit="batch", total=total, disable=not progress):
        images = batch["images"].to(device)
        ids, rec = reconstruct(tokenizer, images)
        # the discrete-only decoding: the reconstruction itself unless the tokenizer is hybrid
        discrete = tokenizer.detokenize(ids) if hybrid and ("psnr_discrete" in sums or prefix_sums) else rec
        counter.update(ids)
        if "psnr" in sums:
            sums["psnr"] += float(psnr(rec, images).sum())
        if "psnr_discrete" in sums:
            sums["psnr_discrete"] += float(psnr(discrete, images).sum())
        if "ssim" in sums:
            sums["ssim"] += float(ssim(rec, images).sum())
        if prefix_sums:
            for k, partial in enumerate(prefix_reconstructions(tokenizer, ids) + [discrete]):
                prefix_sums[k] += float(psnr(partial, images).sum())
        if lpips_net is not None:
            sums["lpips"] += float(lpips_net(rec, images).sum())
        if inception is not None:
            real_features.append(inception(images).cpu())
            fake_features.append(inception(rec).cpu())
        n += images.shape[0]
    if n == 0:
        raise ValueError("evaluation data is empty")
    results: dict = {"images": n, "image_size": int(images.shape[-1])}
    results.update({m: total / n for m, total in sums.items()})
    if prefix_sums:
        # PSNR after scales 1..k, for k = 1 .. K; the last entry is the full (discrete) decoding
        results["prefix_psnr"] = [{"scales": list(tokenizer.scales[: k + 1]), "psnr": total / n}
                                  for k, total in enumerate(prefix_sums)]
    if inception is not None:
        from artok.metrics.fid import frechet_distance

        results["rfid"] = frechet_distance(torch.cat(real_features), torch.cat(fake_features))
        results["rfid_network"] = inception.source
    if "usage" in metrics:
        results["codebook_size"] = tokenizer.codebook_size
        results["scales"] = counter.summary()
    return results


def format_table(results: dict) -> str:
    """A readable summary of ``evaluate_tokenizer``'s results."""
    lines = [f"images          {results['images']} ({results['image_size']} px)"]
    labels = {"psnr": ("PSNR", "{:.2f} dB"), "psnr_discrete": ("PSNR discrete", "{:.2f} dB"), "ssim": ("SSIM", "{:.4f}"), "lpips": ("LPIPS", "{:.4f}"),
              "rfid": ("rFID", "{:.2f}")}
    for key, (label, fmt) in labels.items():
        if key in results:
            lines.append(f"{label:<16}{fmt.format(results[key])}")
    if "rfid" in results:
        lines.append(f"{'':<16}(Inception: {results['rfid_network']}; rFID is biased upward below ~10k images)")
    if "prefix_psnr" in results:
        lines.append("PSNR after the first k scales (what a next-scale generator has drawn by then)")
        for row in results["prefix_psnr"]:
            lines.append(f"  {'+'.join(f'{s}x{s}' for s in row['scales']):<28} {row['psnr']:.2f} dB")
    if "scales" in results:
        lines.append(f"codebook        {results['codebook_size']} codes")
        lines.append(f"  {'scale':>7} {'tokens':>9} {'codes used':>11} {'usage':>7} {'perplexity':>11}")
        for row in results["scales"]:
            lines.append(f"  {row['scale']:>4}x{row['scale']:<2} {row['tokens']:>9} {row['codes_used']:>11} "
                         f"{row['usage']:>7.1%} {row['perplexity']:>11.1f}")
    return "\n".join(lines)
