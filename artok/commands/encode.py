"""``artok encode TOKENIZER --data SRC --out DIR``: a dataset → sharded multi-scale token ids.

Runs on one process as is, or across processes/GPUs with ``accelerate launch -m artok.cli encode ...``:
each process encodes its own shards and the main process writes the manifest.

``--captions`` stores each image's caption beside its ids (``captions.jsonl``); ``--text-encoder NAME_OR_DIR``
also stores the text encoder's outputs (fp16, ``contexts.bin``, the encoder's record and weights hash in the
manifest), so text-conditioned training does not run the encoder. The main process encodes the captions.
"""
from __future__ import annotations


def run(args) -> int:
    import torch
    from accelerate import PartialState

    from artok.pipeline import Pipeline, from_pretrained
    from artok.tokenizers import Tokenizer
    from artok.data import build_source, data_config_from_spec
    from artok.data.encode import ImageSource, encode_dataset

    state = PartialState(cpu=args.cpu)
    model = from_pretrained(args.tokenizer)
    tok = model.tokenizer if isinstance(model, Pipeline) else model
    if not isinstance(tok, Tokenizer):
        raise ValueError(f"{args.tokenizer} holds a {type(tok).__name__}, not a tokenizer")
    tok = tok.to(state.device).eval()
    config = data_config_from_spec(args.data, split=args.split, num_samples=args.num_samples,
                                   caption_key=args.caption_key)
    source = build_source(config, image_size=tok.image_size, seed=args.seed)
    if args.limit:
        source = torch.utils.data.Subset(source, range(min(args.limit, len(source))))
    manifest = encode_dataset(
        tok, ImageSource(source, tok.image_size, args.augment), args.out, image_size=tok.image_size,
        augment=args.augment, shard_size=args.shard_size, batch_size=args.batch_size, num_workers=args.num_workers,
        rank=state.process_index, world_size=state.num_processes, source=args.data, overwrite=args.overwrite,
        barrier=state.wait_for_everyone, progress=state.is_local_main_process or state.num_processes == 1,
    )
    if manifest is not None and (args.captions or args.text_encoder):
        from artok.config import TextEncoderConfig
        from artok.data.captions import write_captions
        from artok.models.text_encoder import TextEncoder

        encoder = None
        if args.text_encoder:
            encoder = TextEncoder(TextEncoderConfig(name_or_path=args.text_encoder, max_length=args.text_max_length,
                                                    hidden_layer=args.text_hidden_layer, null_prompt=args.null_prompt),
                                  device=state.device)
        write_captions(_Captioned(source), args.out, encoder=encoder, batch_size=args.batch_size)
    if manifest is not None:
        for s in manifest["skipped"][:10]:
            print(f"  skipped {s['index']}: {s['reason']}")
        if len(manifest["skipped"]) > 10:
            print(f"  … {len(manifest['skipped']) - 10} more listed in {args.out}/manifest.json")
    return 0


class _Captioned:
    """``caption(i)`` through a ``--limit`` Subset."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def caption(self, i: int) -> str:
        s = self.source
        if hasattr(s, "indices"):
            return s.dataset.caption(s.indices[i])
        return s.caption(i)


def register(sub, formatter_class) -> None:
    p = sub.add_parser("encode", help="encode a dataset to sharded token ids", description=__doc__,
                       formatter_class=formatter_class)
    p.add_argument("tokenizer", help="artok tokenizer (or pipeline) checkpoint directory")
    p.add_argument("--data", required=True,
                   help="image folder, tar shards (*.tar / {000..009}.tar), hf:NAME, a save_to_disk folder, or a "
                        "built-in set: procedural, procedural-centred, fashion-mnist, skimage")
    p.add_argument("--out", required=True, help="output directory (resumed if it holds a partial encoding)")
    p.add_argument("--augment", choices=("none", "hflip", "tencrop"), default="none",
                   help="views per image: none (1), hflip (2), tencrop (10: 5 crops of a 1.1x resize and flips)")
    p.add_argument("--split", default="train", help="dataset split (hf, built-in sets)")
    p.add_argument("--num-samples", type=int, default=10000, help="size of the procedural/skimage sets")
    p.add_argument("--limit", type=int, default=0, help="encode only the first N inputs (0: all)")
    p.add_argument("--shard-size", type=int, default=4096, help="inputs per shard")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--seed", type=int, default=0, help="seed of the procedural/skimage sets")
    p.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    p.add_argument("--overwrite", action="store_true", help="discard an existing encoding made with other settings")
    text = p.add_argument_group("captions (text-conditioned training)")
    text.add_argument("--captions", action="store_true", help="store each image's caption beside its ids")
    text.add_argument("--caption-key", default="caption",
                      help="text column of a Hugging Face dataset / field of a tar sample's .json member")
    text.add_argument("--text-encoder", metavar="NAME_OR_DIR",
                      help="also store this text encoder's outputs for the captions (fp16), e.g. "
                           "mit-han-lab/Qwen2-VL-1.5B-Instruct or a local folder")
    text.add_argument("--text-max-length", type=int, default=300, help="prompt tokens (padded / truncated)")
    text.add_argument("--text-hidden-layer", type=int, default=-1, help="which hidden state (-1: the last)")
    text.add_argument("--null-prompt", default=None,
                      help="prompt whose context caption dropout trains (default: HART's zero context)")
    p.set_defaults(func=run)
