"""Sample class-conditional images on many processes: the ``artok sample`` command under ``accelerate launch``
(``accelerate launch -m artok.cli sample ...`` does the same).

    accelerate launch sample/sample.py CHECKPOINT --per-class 50 --cfg 1.5 --top-k 900 --top-p 0.96 \\
        --batch-size 64 --out samples/var-d16 --npz

Same arguments and files as ``artok sample``. Batch b goes to process b mod P and is drawn with seed
``seed + b``, so the images do not depend on the number of processes. Every process writes its own PNGs;
the main process then writes the grid and ``samples.npz`` (``arr_0``: uint8 N×H×W×3, what the ImageNet
FID evaluator reads).
"""
from __future__ import annotations

import argparse

from artok.commands import sample as cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cmd.add_arguments(parser)  # exactly the CLI's arguments, and its run: one house for one and many processes
    return cmd.run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
