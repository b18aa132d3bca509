"""Sample class-conditional images on many processes: the ``artok sample`` command under ``accelerate launch``.

    accelerate launch sample/sample.py CHECKPOINT --per-class 50 --cfg 1.5 --top-k 900 --top-p 0.96 \\
        --batch-size 64 --out samples/var-d16 --npz

Same arguments and files as ``artok sample``. Batch b goes to process b mod P and is drawn with seed
``seed + b``, so the images do not depend on the number of processes. Every process writes its own PNGs;
the main process then writes the grid and ``samples.npz`` (``arr_0``: uint8 N×H×W×3, what the ImageNet
FID evaluator reads).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from accelerate import Accelerator

from artok.commands import sample as cmd


def main(argv: list[str] | None = None) -> int:
    # 1. parse: exactly the CLI's arguments
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cmd.add_arguments(parser)
    args = parser.parse_args(argv)

    # 2. processes and device; every process checks --out before any of them writes
    accelerator = Accelerator(cpu=args.device == "cpu")
    device = accelerator.device
    cmd.check_out_dir(args.out, args.overwrite)

    # 3. the pipeline and the plan (identical on every process)
    tok, gen = cmd.load_pipeline(args.checkpoint, device)
    labels = cmd.plan_labels(args.classes, args.per_class, gen.num_classes)
    jobs = cmd.batches(labels, args.batch_size)
    mine = jobs[accelerator.process_index::accelerator.num_processes]
    if accelerator.is_main_process:
        cmd.prepare_out_dir(args.out, args.overwrite)
    accelerator.wait_for_everyone()

    # 4. sample this process's batches (the main process shows its own images/s)
    t0 = time.perf_counter()
    n = cmd.sample_jobs(tok, gen, mine, args, device, out=Path(args.out), progress=accelerator.is_main_process)
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()

    # 5. grid and npz from all processes' PNGs
    if accelerator.is_main_process:
        written = cmd.finish(Path(args.out), npz=args.npz)
        print(f"wrote {len(labels)} samples to {args.out} with {accelerator.num_processes} processes "
              f"(main process: {n / seconds:.2f} images/s on {device}); " + ", ".join(p.name for p in written))
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
