"""``artok train tokenizer``: train a tokenizer from a YAML config, on one process or several.

Each training target registers a subcommand of ``artok train`` (``TARGETS``); the generator trainer adds
its own next to ``tokenizer``. With ``--num-processes N`` > 1 the command re-runs itself under
``accelerate launch`` (one process per GPU, or gloo processes on CPU).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from artok.commands.targets import lazy_target, register_with_targets


def free_port() -> int:
    """A TCP port that is free right now on this machine, for the processes' rendezvous (two runs on one
    machine would otherwise both take accelerate's default 29500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(num_processes: int, mixed_precision: str, argv: list[str]) -> list[str]:
    """The ``accelerate launch`` command line that runs ``artok <argv>`` on ``num_processes`` processes."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "artok.cli", *argv]


def _without(argv: list[str], flag: str) -> list[str]:
    """argv with ``flag VALUE`` / ``flag=VALUE`` removed."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def relaunch_or_print(args, cfg) -> int | None:
    """Run the command again under ``accelerate launch`` for ``--num-processes`` > 1, or print the resolved
    config for ``--dry-run``; returns the exit code then, None when the caller should train here."""
    if args.num_processes > 1 and "LOCAL_RANK" not in os.environ and not args.dry_run:
        # the processes read the resolved config (YAML + overrides + shortcuts), kept in the run directory
        resolved = Path(cfg.train.out_dir) / "launch_config.yaml"
        resolved.parent.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(resolved)
        argv = ["train", args.target, "--config", str(resolved), *(["--no-progress"] if args.no_progress else [])]
        return subprocess.call(accelerate_command(args.num_processes, cfg.train.mixed_precision, argv))
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        return 0
    return None


def run_tokenizer(args) -> int:
    from artok.config import TokenizerTrainConfig
    from artok.training.args import load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.data:
        from artok.data import data_config_from_spec

        spec = data_config_from_spec(args.data)
        overrides = {"data.source": spec.source, "data.path": spec.path, **overrides}
    if args.out_dir:
        overrides["train.out_dir"] = args.out_dir
    if args.mixed_precision:
        overrides["train.mixed_precision"] = args.mixed_precision
    cfg = load_config(TokenizerTrainConfig, args.config, overrides)
    handled = relaunch_or_print(args, cfg)
    if handled is not None:
        return handled
    from artok.training.tokenizer_trainer import train_tokenizer

    result = train_tokenizer(cfg, progress=not args.no_progress)
    if result.eval:
        print(json.dumps(result.summary(), indent=2))
    return 0


def register_tokenizer(targets, formatter_class) -> None:
    p = targets.add_parser(
        "tokenizer", formatter_class=formatter_class, help="train a VQ, multi-scale or hybrid tokenizer",
        description="Train a tokenizer. Arguments after the options are dotted overrides of the YAML config, "
                    "e.g. --train.lr=3e-4 --tokenizer.quantizer.codebook_size=512. The run resumes automatically "
                    "from train.out_dir/checkpoints.",
        epilog="example:\n  artok train tokenizer --config configs/tiny/train-var-tokenizer.yaml --train.max_steps=200\n"
               "  artok train tokenizer --config configs/train/var-tokenizer-f16.yaml --data /images --num-processes 8")
    p.add_argument("--config", help="training YAML (configs/train/*.yaml, configs/tiny/*.yaml); defaults when omitted")
    p.add_argument("--data", help="shortcut for data.source/data.path: a folder, tar shards, hf:NAME, or one of "
                                  "procedural, procedural-centred, fashion-mnist, skimage")
    p.add_argument("--out-dir", help="shortcut for train.out_dir")
    p.add_argument("--num-processes", type=int, default=1, help="processes to launch with accelerate")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="shortcut for train.mixed_precision")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_tokenizer, overrides=[])  # dotted overrides arrive as unknown options (cli.main)


TARGETS = [register_tokenizer, lazy_target("artok.commands.train_generator", "register_generator")]


def register(sub, formatter_class) -> None:
    register_with_targets(sub, "train", "train a model (tokenizer, ...)", TARGETS, formatter_class)
