"""Training-free acceleration of VAR sampling: what each option buys (images/s) and what it costs (class
accuracy, FID, precision and recall of the samples), on a trained class-conditional pipeline.

    python benchmarks/acceleration.py runs/fm/generator/pipeline --draft runs/fm/draft/pipeline \\
        --train data/fashion-mnist-32/train --test data/fashion-mnist-32/test --per-class 50

Every row samples the same labels with the same seeds (``--per-class`` of every class); "exact" is the plain
sampler. Speed: tokens only (the transformer and the tokenizer's residual steps, no decoder, which every
option leaves as it is) and end to end, for one batch of ``--batch`` labels, the rows timed in turn
``--repeats`` times and the median kept, so a busy machine slows all rows alike. Quality: a small classifier
trained on ``--classifier-images`` real training images (``artok.metrics.classifier``); FID, precision and
recall on its pooled features against ``--ref`` test images (the quickstart's measure: no Inception pass).
``--draft`` is a smaller generator trained on the same tokenizer (CoDe's draft model).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline")
    p.add_argument("--draft", help="a smaller generator (pipeline or generator folder) on the same tokenizer")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--ref", type=int, default=1000)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classifier-images", type=int, default=10000)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import artok
    from artok.metrics.classifier import accuracy, train_classifier
    from artok.recipes.quickstart import sample_per_class, sample_quality
    from artok.sampling import Acceleration, generate
    from generator_quality import load_folder  # benchmarks/generator_quality.py

    pipe = artok.from_pretrained(args.pipeline)
    tok, gen = pipe.tokenizer.eval(), pipe.generator.eval()
    K, classes = len(gen.block_sizes), gen.num_classes
    settings = {"exact": None,
                "guidance off, last block": Acceleration(guidance_off_last=1),
                "guidance off, last 2 blocks": Acceleration(guidance_off_last=2),
                "merge 50% of tokens, last block": Acceleration(merge_last=1, merge_ratio=0.5),
                "merge 50% of tokens, last 2 blocks": Acceleration(merge_last=2, merge_ratio=0.5)}
    if args.draft:
        loaded = artok.from_pretrained(args.draft)
        draft = (loaded.generator if hasattr(loaded, "generator") else loaded).eval()
        size = sum(q.numel() for q in draft.parameters()) / sum(q.numel() for q in gen.parameters())
        settings[f"draft model ({size:.0%} of the parameters), last block"] = Acceleration(draft=draft, draft_last=1)
        if K > 2:
            settings["draft model, last 2 blocks"] = Acceleration(draft=draft, draft_last=2)
        settings["guidance off + draft, last block"] = Acceleration(guidance_off_last=1, draft=draft, draft_last=1)

    labels = torch.arange(args.batch) % classes
    speed = {name: {"tokens": [], "end to end": []} for name in settings}
    with torch.inference_mode():
        for i in range(args.repeats + 1):
            for name, acc in settings.items():
                for kind, decode in (("tokens", False), ("end to end", True)):
                    rng = torch.Generator().manual_seed(i)
                    t0 = time.perf_counter()
                    generate(gen, tok, labels, cfg_scale=args.cfg, top_k=args.top_k, generator=rng, decode=decode,
                             acceleration=acc)
                    if i:
                        speed[name][kind].append(time.perf_counter() - t0)

    test_x, test_y = load_folder(args.test, args.ref, tok.image_size, seed=1)
    train_x, train_y = load_folder(args.train, args.classifier_images, tok.image_size, seed=2)
    clf = train_classifier(train_x, train_y, num_classes=classes, steps=args.classifier_steps, batch_size=64, seed=0)
    print(f"\n{args.pipeline}: {K} blocks {gen.block_sizes}, cfg {args.cfg:g}, top-k {args.top_k}; "
          f"{args.per_class * classes} samples per row; batch {args.batch} for speed, {args.threads} threads; "
          f"classifier {accuracy(clf, test_x, test_y):.1%} on {len(test_x)} real test images\n")
    print("| setting | tokens img/s | speed-up | end to end img/s | speed-up | class accuracy | FID | precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {kind: statistics.median(speed["exact"][kind]) for kind in ("tokens", "end to end")}
    for name, acc in settings.items():
        samples, sample_labels = sample_per_class(gen, tok, classes, args.per_class, seed=0, device="cpu",
                                                  cfg_scale=args.cfg, top_k=args.top_k, acceleration=acc)
        q = sample_quality(clf, samples, train_x[:len(samples)], test_x)
        t = {kind: statistics.median(speed[name][kind]) for kind in base}
        print(f"| {name} | {args.batch / t['tokens']:.0f} | {base['tokens'] / t['tokens']:.2f}× | "
              f"{args.batch / t['end to end']:.0f} | {base['end to end'] / t['end to end']:.2f}× | "
              f"{accuracy(clf, samples, sample_labels):.1%} | {q['fid']:.2f} | {q['precision']:.2f} | "
              f"{q['recall']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
