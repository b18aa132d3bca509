"""VAR vs HART, measured side by side on one tokenizer and one budget (issue 17): does HART's continuous
residual improve reconstruction and samples here, as its paper says it does on ImageNet?

One tokenizer family for both: the quickstart's tokenizer recipe trains a discrete multi-scale tokenizer on
the centred shapes (16 px, scales 1/2/4/8, V=512); HART's recipe then makes it hybrid (encoder and codebook
frozen, the decoder fine-tuned on the discrete-only and the hybrid latent). Both generators train on the
same ids of that hybrid tokenizer for the same minutes with the quickstart's generator recipe: VAR
(``quickstart-var``) decodes the discrete-only latent, HART (``quickstart-hart``: Llama blocks, MAR masking of
the last scale, a diffusion MLP for the residual) the hybrid one. Judged as the quickstart judges: a
classifier trained on real shapes scores class accuracy; FID, precision and recall are on its 64-d features
(500 images against 1,000 test images; the floor is as many real training images); sampling images/s is
timed on the same batches. About 16 minutes with the defaults, every stage with all cores:

    python benchmarks/var_vs_hart.py --out runs/var-vs-hart
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from artok.config.presets import generator_config, hart_config, tokenizer_config
from artok.data import ProceduralShapes
from artok.data.builtin import PROCEDURAL_CLASSES
from artok.data.encode import ImageSource, encode_dataset
from artok.data.tokens import TokenDataset
from artok.metrics.classifier import accuracy, per_class_accuracy, train_classifier
from artok.metrics.image import psnr
from artok.pipeline import from_pretrained
from artok.data.builtin import STYLE_SOURCES
from artok.recipes.quickstart import (CLASSIFIER_IMAGES, CLASSIFIER_STEPS, STYLE, generator_recipe, real_images,
                                      sample_per_class, sample_quality, save_class_grid, tokenizer_recipe)
from artok.training.generator_trainer import train_generator
from artok.training.tokenizer_trainer import train_tokenizer

FREEZE = ("encoder", "quant_conv", "quantizer.codebook")  # HART's recipe: the decoder learns both latents


def steps_estimate(minutes: float, per_second: float) -> int:
    return max(20, int(minutes * 60 * per_second))


def last_step(run: Path) -> int:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(r["step"] for r in records)


def reconstruction_row(name, classifier, recs, test_x, test_y, train_recs, train_x) -> dict:
    """PSNR and class accuracy of the test reconstructions; FID, precision and recall of the training
    reconstructions against the test images (as samples are judged)."""
    quality = sample_quality(classifier, train_recs, train_x, test_x)
    return {"row": name, "psnr": float(psnr(recs, test_x).mean()), "class_accuracy": accuracy(classifier, recs, test_y),
            "fid": quality["fid"], "precision": quality["precision"], "recall": quality["recall"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/var-vs-hart")
    p.add_argument("--tokenizer-minutes", type=float, default=3.6,
                   help="the discrete tokenizer (the quickstart's share)")
    p.add_argument("--hybrid-minutes", type=float, default=1.5, help="HART's decoder fine-tuning on both latents")
    p.add_argument("--generator-minutes", type=float, default=4.5, help="each generator")
    p.add_argument("--images", type=int, default=8000, help="shapes encoded for the generators")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hart-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of quickstart-hart (repeatable), e.g. min_kept_tokens=64 (no MAR masking of the "
                        "last scale); the run goes to --out/hart-KEY-VALUE and its row is added beside the others")
    p.add_argument("--reuse", action="store_true", help="keep the tokenizers, shards and generators already under "
                   "--out (trained by an earlier run with the same settings) and only score them again")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    classes = len(PROCEDURAL_CLASSES)

    def stage(text: str) -> None:
        print(f"[{(time.time() - t0) / 60:.1f} min] {text}", flush=True)

    # 1. the discrete tokenizer, then HART's hybrid fine-tuning of its decoder ---------------------------------
    discrete = tokenizer_config("quickstart-var-vqvae")
    def done(path: Path) -> bool:
        if a.reuse and path.exists():
            stage(f"reusing {path}")
            return True
        return False

    if not done(out / "tokenizer" / "tokenizer"):
        stage("training the discrete tokenizer")
        train_tokenizer(tokenizer_recipe(discrete, out / "tokenizer", minutes=a.tokenizer_minutes,
                                         steps=steps_estimate(a.tokenizer_minutes, 4.5), seed=a.seed,
                                         num_images=20000), progress=False)
    hybrid = discrete.replace(quantizer=discrete.quantizer.replace(kind="hybrid"))
    cfg = tokenizer_recipe(hybrid, out / "hybrid", minutes=a.hybrid_minutes,
                           steps=steps_estimate(a.hybrid_minutes, 4.5), seed=a.seed, num_images=20000)
    cfg = cfg.replace(train=cfg.train.replace(init_from=str(out / "tokenizer" / "tokenizer"), freeze=FREEZE))
    if not done(out / "hybrid" / "tokenizer"):
        stage("fine-tuning the hybrid decoder (encoder and codebook frozen)")
        train_tokenizer(cfg, progress=False)
    var_tok = from_pretrained(out / "tokenizer" / "tokenizer").eval()
    tok = from_pretrained(out / "hybrid" / "tokenizer").eval()

    # 2. ids + residuals of the shapes -------------------------------------------------------------------------
    size = tok.config.image_size
    if not done(out / "tokens" / "manifest.json"):
        stage(f"encoding {a.images} shapes (ids and residuals)")
        source = ProceduralShapes(num_samples=a.images, image_size=size, seed=a.seed, style=STYLE)
        encode_dataset(tok, ImageSource(source, size, "none"), out / "tokens", image_size=size, shard_size=2048,
                       batch_size=128, source=STYLE_SOURCES[STYLE], overwrite=True, progress=False)
    shards = TokenDataset(out / "tokens", as_tensors=False)
    residual_std = float(np.stack([shards[i].residual for i in range(min(2000, len(shards)))]).std())

    # 3. the scorer and the reconstructions ---------------------------------------------------------------------
    stage("training the classifier on real shapes; reconstructions")
    train_x, train_y = real_images(CLASSIFIER_IMAGES, split="train", image_size=size)
    test_x, test_y = real_images(1000, split="test", image_size=size)
    classifier = train_classifier(train_x, train_y, num_classes=classes, steps=CLASSIFIER_STEPS, batch_size=64,
                                  progress=False, seed=0)
    n = a.per_class * classes
    rows = []
    with torch.no_grad():
        decodings = (
            ("VAR tokenizer (before the hybrid fine-tuning)", lambda x: var_tok.detokenize(var_tok.tokenize(x))),
            ("hybrid tokenizer, discrete only (what VAR decodes)", lambda x: tok.detokenize(tok.tokenize(x))),
            ("hybrid tokenizer, discrete + residual (what HART decodes)",
             lambda x: tok.detokenize(*tok.tokenize_hybrid(x))))
        for name, decode in decodings:
            rows.append(reconstruction_row(name, classifier, decode(test_x).clamp(-1, 1), test_x, test_y,
                                           decode(train_x[:n]).clamp(-1, 1), train_x[:n]))
    floor = sample_quality(classifier, train_x[:n], train_x[:n], test_x)

    # 4. the two generators, same ids, same minutes -------------------------------------------------------------
    gens = {
        "VAR": generator_config("quickstart-var"),
        # the diffusion head works on residual / latent_scale: the residuals' own scale here (HART's 0.6 is its VAE's)
        "HART": hart_config("quickstart-hart", **{"diffusion_head.latent_scale": residual_std}),
    }
    if a.hart_set:
        overrides = dict(kv.split("=", 1) for kv in a.hart_set)
        gens[f"HART, {', '.join(a.hart_set)}"] = hart_config(
            "quickstart-hart", **{"diffusion_head.latent_scale": residual_std},
            **{k: yaml.safe_load(v) for k, v in overrides.items()})
    folders = {name: out / name.lower() for name in ("VAR", "HART")}
    folders.update({name: out / ("hart-" + "-".join(kv.replace("=", "-") for kv in a.hart_set))
                    for name in gens if name not in folders})
    results = {}
    for name, gcfg in gens.items():
        run = folders[name]
        if not done(run / "pipeline"):
            stage(f"training the {name} generator, {a.generator_minutes:g} min")
            recipe = generator_recipe(gcfg, out / "hybrid" / "tokenizer", out / "tokens", run,
                                      minutes=a.generator_minutes, steps=steps_estimate(a.generator_minutes, 4.0),
                                      seed=a.seed, classes=classes)
            train_generator(recipe, progress=False)
        pipe = from_pretrained(run / "pipeline")
        gen, gen_tok = pipe.generator.eval(), pipe.tokenizer.eval()
        sample_per_class(gen, gen_tok, classes, 1, seed=a.seed, device="cpu")  # warm-up
        outputs = []  # each batch's ids (and HART's residual)
        t = time.perf_counter()
        samples, labels = sample_per_class(gen, gen_tok, classes, a.per_class, seed=a.seed, device="cpu",
                                           outputs=outputs)
        seconds = time.perf_counter() - t
        per_class = per_class_accuracy(classifier, samples, labels, classes)
        quality = sample_quality(classifier, samples, train_x[:n], test_x)
        save_class_grid(samples.view(classes, a.per_class, *samples.shape[1:])[:, :10].flatten(0, 1), classes,
                        out / f"samples_{name.lower()}.png")
        results[name] = {"parameters": sum(q.numel() for q in gen.parameters()), "steps": last_step(run),
                         "class_accuracy": sum(per_class) / classes,
                         "weakest_class": min(per_class), "per_class": dict(zip(PROCEDURAL_CLASSES, per_class)),
                         "fid": quality["fid"], "precision": quality["precision"], "recall": quality["recall"],
                         "images_per_second": len(samples) / seconds}
        if name.startswith("HART"):  # the residual or the ids? the same draws decoded without the head's part
            with torch.no_grad():
                discrete_only = torch.cat([gen_tok.detokenize(o.ids).clamp(-1, 1) for o in outputs])
            per_class = per_class_accuracy(classifier, discrete_only, labels, classes)
            quality = sample_quality(classifier, discrete_only, train_x[:n], test_x)
            results[f"{name}: its ids decoded without the residual"] = {
                "parameters": results[name]["parameters"], "steps": results[name]["steps"],
                "class_accuracy": sum(per_class) / classes, "weakest_class": min(per_class),
                "per_class": dict(zip(PROCEDURAL_CLASSES, per_class)), "fid": quality["fid"],
                "precision": quality["precision"], "recall": quality["recall"], "images_per_second": float("nan")}

    report = {"reconstruction": rows, "real_train_fid": floor["fid"], "generators": results,
              "residual_std": residual_std, "minutes": (time.time() - t0) / 60, "settings": vars(a)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print("\n| reconstruction (1,000 test shapes) | PSNR | class accuracy | FID | precision | recall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['psnr']:.2f} dB | {r['class_accuracy']:.1%} | {r['fid']:.2f} | "
              f"{r['precision']:.2f} | {r['recall']:.2f} |")
    print(f"| {n} real training images (the floor) | | | {floor['fid']:.2f} | | |")
    print(f"\n| generator ({a.generator_minutes:g} min each, cfg 3) | parameters | steps | class accuracy | "
          "weakest class | FID | precision | recall | sampling images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['steps']} | {r['class_accuracy']:.1%} | "
              f"{r['weakest_class']:.0%} | {r['fid']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} | "
              f"{r['images_per_second']:.1f} |".replace("| nan |", "| (same draws) |"))
    stage(f"done; {out / 'report.json'}")


if __name__ == "__main__":
    main()
