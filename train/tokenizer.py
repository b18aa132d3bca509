"""Train an image tokenizer (VQ, multi-scale VAR, hybrid HART) with Accelerate.

    accelerate launch train/tokenizer.py --config configs/tiny/train-var-tokenizer.yaml --train.max_steps=200
    accelerate launch --multi_gpu --num_processes 8 train/tokenizer.py --config configs/train/var-tokenizer-f16.yaml

Arguments after --config are dotted overrides of the YAML (``--train.lr=3e-4``, ``--data.path=/images``).
The run directory (``train.out_dir``) receives config.yaml, checkpoints/ (resumed automatically), samples/
(originals above reconstructions), metrics.jsonl, loss_curves.png, TensorBoard logs, bad_files.txt when
files were skipped, and tokenizer/ with the EMA weights for ``artok.from_pretrained``.
"""
from __future__ import annotations

import argparse
import json
import sys

from artok.config import TokenizerTrainConfig
from artok.training.args import load_config
from artok.training.tokenizer_trainer import train_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="training YAML (configs/train/*.yaml, configs/tiny/*.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to out_dir)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(TokenizerTrainConfig, args.config, overrides)
    result = train_tokenizer(cfg, progress=not args.no_progress)
    if result.eval:  # only the main process evaluates
        print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
