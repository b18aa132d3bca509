"""``artok train generator``: train the next-scale transformer on token shards (or images), one process or
several (``--num-processes N`` re-runs the command under ``accelerate launch``)."""
from __future__ import annotations

import json


def run_generator(args) -> int:
    from artok.commands.train import relaunch_or_print
    from artok.config import GeneratorTrainConfig
    from artok.training.args import parse_overrides

    overrides = parse_overrides(args.overrides)
    cfg = GeneratorTrainConfig.from_yaml(args.config) if args.config else None
    data = cfg.to_dict() if cfg is not None else {"generator": args.generator or "tiny-var"}
    if args.generator and cfg is not None:
        data["generator"] = args.generator  # a VAR or a HART preset name: from_dict resolves either
    if args.tokenizer:
        data["tokenizer"] = args.tokenizer
    if args.tokens:
        data.setdefault("data", {})["tokens"] = args.tokens
    if args.data:
        from artok.data import data_config_from_spec

        data.setdefault("data", {})["images"] = data_config_from_spec(args.data, caption_key=args.caption_key).to_dict()
    if args.text_encoder:
        data["text_encoder"] = {**(data.get("text_encoder") or {}), "name_or_path": args.text_encoder}
    for flag, key in ((args.out_dir, "out_dir"), (args.mixed_precision, "mixed_precision")):
        if flag:
            data.setdefault("train", {})[key] = flag
    cfg = GeneratorTrainConfig.from_dict(data)
    if overrides:
        cfg = cfg.override(overrides)
    cfg.check_runnable()
    handled = relaunch_or_print(args, cfg)
    if handled is not None:
        return handled
    from artok.training.generator_trainer import train_generator

    result = train_generator(cfg, progress=not args.no_progress)
    if result.main_process:
        print(json.dumps(result.summary(), indent=2))
    return 0


def register_generator(targets, formatter_class) -> None:
    p = targets.add_parser(
        "generator", formatter_class=formatter_class, help="train a next-scale (VAR) or raster generator",
        description="Train a generator on token ids. Arguments after the options are dotted overrides, e.g. "
                    "--train.max_steps=20000 --recipe.label_smoothing=0.1 --generator.depth=20. The run resumes "
                    "automatically from train.out_dir/checkpoints and exports train.out_dir/pipeline.",
        epilog="examples:\n"
               "  artok train generator --generator tiny-var --tokenizer runs/tok/tokenizer --tokens tokens/shapes "
               "--out-dir runs/gen\n"
               "  artok train generator --generator tiny-hart-t2i --tokenizer runs/hart-tok --tokens tokens/captioned "
               "--out-dir runs/t2i   # contexts stored by artok encode --text-encoder\n"
               "  artok train generator --generator tiny-hart-t2i --tokenizer runs/hart-tok --data captioned/ "
               "--text-encoder models/qwen2 --text_encoder.max_length=8 --out-dir runs/t2i\n"
               "  artok train generator --config configs/train/var-d16.yaml --num-processes 8 --mixed-precision bf16")
    p.add_argument("--config", help="training YAML (configs/train/var-*.yaml, configs/tiny/train-var-generator.yaml)")
    p.add_argument("--generator", help="generator preset, VAR (var-d16, ..., tiny-var) or HART (hart-c2i-d20-256, tiny-hart-c2i); replaces the config's")
    p.add_argument("--tokenizer", help="tokenizer (or pipeline) checkpoint whose ids the generator models")
    p.add_argument("--tokens", help="token shards written by artok encode (data.tokens)")
    p.add_argument("--data", help="images to tokenize on the fly when there are no shards (data.images): a folder, "
                                  "tar shards, hf:NAME, or procedural, procedural-centred, fashion-mnist, skimage")
    p.add_argument("--text-encoder", metavar="NAME_OR_DIR",
                   help="text-conditioned HART: the text encoder of the captions (text_encoder.name_or_path)")
    p.add_argument("--caption-key", default="caption",
                   help="with --data: the caption column of a Hugging Face dataset / field of a tar .json member")
    p.add_argument("--out-dir", help="shortcut for train.out_dir")
    p.add_argument("--num-processes", type=int, default=1, help="processes to launch with accelerate")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="shortcut for train.mixed_precision")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generator, overrides=[])
