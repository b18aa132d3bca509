"""The quickstart's report: one Markdown page and the same as HTML, with images referenced relatively."""
from __future__ import annotations

import html
from pathlib import Path


def _rel(path: Path | None, root: Path) -> str | None:
    return str(Path(path).relative_to(root)) if path is not None and Path(path).exists() else None


def _latest(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.png"))
    return found[-1] if found else None


def _num(value, digits: int = 2, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.{max(0, digits - 1)}f}%" if pct else f"{value:.{digits}f}"


def write_report(out: Path, metrics: dict, *, sample_grid: Path, class_names) -> Path:
    """Write ``out/report.md`` and ``out/report.html``; returns the HTML path."""
    out = Path(out)
    tok, enc, gen, smp = metrics["tokenizer"], metrics["encode"], metrics["generator"], metrics["samples"]
    usage = tok.get("codebook_usage_per_scale") or {}
    usage_text = ", ".join(f"{k}: {_num(v, 2, pct=True)}" for k, v in usage.items()) if isinstance(usage, dict) \
        else ", ".join(_num(v, 2, pct=True) for v in usage)
    rows = [
        ("tokenizer steps", str(tok["steps"])),
        ("reconstruction PSNR (held-out)", f"{_num(tok.get('psnr'))} dB"),
        ("reconstruction SSIM (held-out)", _num(tok.get("ssim"), 3)),
        ("codebook usage per scale", usage_text or "n/a"),
        ("encoding throughput", f"{enc['images_per_second']:.0f} images/s, {enc['bytes_per_image']:.0f} bytes/image"),
        ("generator steps", str(gen["steps"])),
        ("generator final loss", _num(gen.get("final_loss"), 3)),
        ("sample class accuracy", f"{_num(smp['class_accuracy'], 2, pct=True)} (chance {_num(smp['chance'], 1, pct=True)})"),
        ("classifier accuracy on real images", _num(smp["classifier_accuracy_on_real_images"], 2, pct=True)),
        ("classifier accuracy on the tokenizer's reconstructions (the ceiling)",
         _num(smp.get("classifier_accuracy_on_reconstructions"), 2, pct=True)),
        (f"sample FID against {smp.get('fid_reference_images', 0)} test images ({smp.get('fid_features')} features)",
         f"{_num(smp.get('fid'), 1)} (as many real training images: {_num(smp.get('fid_real_train'), 1)})"),
        ("sample precision / recall", f"{_num(smp.get('precision'), 2)} / {_num(smp.get('recall'), 2)}"),
        ("time", f"{metrics['minutes_used']:.1f} of {metrics['minutes_budget']:g} min on {metrics['device']}"),
    ]
    per_class = smp.get("class_accuracy_per_class", {})
    images = [
        ("Samples, one row per class", _rel(sample_grid, out),
         "Rows, top to bottom: " + ", ".join(class_names) + "."),
        ("Reconstructions (originals above, reconstructions below)", _rel(_latest(out / "tokenizer" / "samples"), out), ""),
        ("Tokenizer training curves", _rel(out / "tokenizer" / "loss_curves.png", out), ""),
        ("Generator training curves", _rel(out / "generator" / "loss_curves.png", out),
         "Middle: the class accuracy of samples drawn during training, against steps."),
        ("Generator samples during training (last grid)", _rel(_latest(out / "generator" / "samples"), out), ""),
    ]
    md = ["# artok quickstart report", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows]
    md += ["", "Class accuracy of the samples, per class:", "", "| class | accuracy |", "|---|---|"]
    md += [f"| {c} | {_num(a, 2, pct=True)} |" for c, a in per_class.items()]
    for title, src, caption in images:
        if src:
            md += ["", f"## {title}", "", f"![{title}]({src})"] + ([caption] if caption else [])
    (out / "report.md").write_text("\n".join(md) + "\n")

    body = ["<h1>artok quickstart report</h1>", "<table>"]
    body += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
    body += ["</table>", "<h3>Class accuracy of the samples</h3>", "<table>"]
    body += [f"<tr><th>{html.escape(c)}</th><td>{_num(a, 2, pct=True)}</td></tr>" for c, a in per_class.items()]
    body.append("</table>")
    for title, src, caption in images:
        if src:
            body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(src)}" alt="{html.escape(title)}">']
            if caption:
                body.append(f"<p>{html.escape(caption)}</p>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>artok quickstart</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}img{max-width:100%;image-rendering:pixelated}"
            "</style></head><body>" + "\n".join(body) + "</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path
