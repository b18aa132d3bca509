"""Train a generator (VAR next-scale transformer, or raster order over a single-scale VQ) with Accelerate.

    accelerate launch train/generator.py --config configs/tiny/train-var-generator.yaml --train.max_steps=200
    accelerate launch --multi_gpu --num_processes 8 train/generator.py --config configs/train/var-d16.yaml
    accelerate launch --config_file configs/accelerate/fsdp.yaml train/generator.py --config configs/train/var-d30.yaml

Arguments after --config are dotted overrides of the YAML (``--train.lr=1e-4``, ``--data.tokens=tokens/in1k``).
The run directory (``train.out_dir``) receives config.yaml, checkpoints/ (resumed automatically), samples/
(one row per class, fixed seed), metrics.jsonl, loss_curves.png, TensorBoard logs, and pipeline/ (the tokenizer
and the EMA generator) for ``artok sample`` and ``artok eval generator``.
"""
from __future__ import annotations

import argparse
import json
import sys

from artok.config import GeneratorTrainConfig
from artok.training.args import load_config
from artok.training.generator_trainer import train_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML (configs/train/var-*.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to out_dir)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(GeneratorTrainConfig, args.config, overrides)
    result = train_generator(cfg, progress=not args.no_progress)
    if result.main_process:
        print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
