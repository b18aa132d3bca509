"""``artok convert``: official checkpoints → artok checkpoint directories."""
from __future__ import annotations

from pathlib import Path

# converter name → (help, function(args) -> module with save_pretrained)
CONVERTERS: dict[str, tuple[str, callable]] = {}


def converter(name: str, help: str, add_arguments):
    def wrap(fn):
        CONVERTERS[name] = (help, fn, add_arguments)
        return fn

    return wrap


def _scales(text_list) -> tuple[int, ...]:
    return tuple(int(s) for s in text_list)


def _var_vqvae_args(p):
    p.add_argument("input", help="VAR VQVAE weights (.pth read with weights_only=True, or .safetensors)")
    p.add_argument("out_dir", help="output artok checkpoint directory")
    p.add_argument("--scales", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
                   help="token-map sides, smallest first (256 px release: 1 2 3 4 5 6 8 10 13 16)")
    p.add_argument("--quant-resi", type=float, default=0.5, help="φ mixing ratio r")


@converter("var-vqvae", "VAR VQVAE (vae_ch160v4096z32.pth) → artok tokenizer", _var_vqvae_args)
def _var_vqvae(args):
    from artok import convert

    return convert.var_vqvae(args.input, scales=_scales(args.scales), quant_resi=args.quant_resi)


def _var_args(p):
    p.add_argument("input_vae", help="VAR VQVAE weights (vae_ch160v4096z32.pth, or .safetensors)")
    p.add_argument("input_var", help="VAR transformer weights (var_d16.pth … var_d36.pth, or .safetensors)")
    p.add_argument("out_dir", help="output artok pipeline directory (tokenizer/ + generator/)")
    p.add_argument("--scales", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
                   help="token-map sides, smallest first (512 px d36: 1 2 3 4 6 9 13 18 24 32)")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads; read from the checkpoint when it has l2-norm attention (all releases)")
    p.add_argument("--quant-resi", type=float, default=0.5, help="φ mixing ratio r of the tokenizer")


@converter("var", "VAR VQVAE + transformer (vae_ch160v4096z32.pth, var_d16.pth) → artok pipeline", _var_args)
def _var(args):
    from artok import convert
    from artok.pipeline import Pipeline
    from artok.sampling import check_compatible

    scales = _scales(args.scales)
    tok = convert.var_vqvae(args.input_vae, scales=scales, quant_resi=args.quant_resi)
    gen = convert.var_transformer(args.input_var, scales=scales, num_heads=args.num_heads)
    check_compatible(gen, tok)
    return Pipeline(tok, gen)


def _hart_args(p):
    p.add_argument("tokenizer_dir", help="HART tokenizer folder (hart-0.7b-1024px/tokenizer: config.json + weights)")
    p.add_argument("llm_dir", help="HART transformer folder (hart-0.7b-1024px/llm: config.json + weights; "
                   "ema_model.bin is preferred when present, as the official sample.py loads it)")
    p.add_argument("out_dir", help="output artok pipeline directory (tokenizer/ + generator/)")
    p.add_argument("--text-encoder", default=None, metavar="NAME_OR_DIR",
                   help="where the text encoder's weights are, recorded in text_encoder.json (default: the Hub id "
                        "mit-han-lab/Qwen2-VL-1.5B-Instruct, as the HART repository uses)")


@converter("hart", "HART tokenizer + transformer folders (hart-0.7b-1024px) → artok pipeline; each config.json "
           "decides its architecture", _hart_args)
def _hart(args):
    from artok.convert.hart import hart_pipeline

    return hart_pipeline(args.tokenizer_dir, args.llm_dir, text_encoder=args.text_encoder)


def register(sub, formatter_class) -> None:
    p = sub.add_parser("convert", help="convert official VAR/HART checkpoints to artok checkpoints",
                       formatter_class=formatter_class)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for name, (help_text, fn, add_arguments) in CONVERTERS.items():
        k = kinds.add_parser(name, help=help_text, description=help_text, formatter_class=formatter_class)
        add_arguments(k)
        k.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in OUT_DIR")
        k.set_defaults(func=lambda a, fn=fn: _run(fn, a))


def _run(fn, args) -> int:
    out = Path(args.out_dir)
    if (out / "config.json").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint; pass --overwrite to replace it")
    model = fn(args)
    model.save_pretrained(out)
    print(f"wrote {out}")
    from artok.commands.info import describe

    print(describe(out))
    return 0
