"""``artok info CHECKPOINT``: config, parameter count, scales and tokens per image."""
from __future__ import annotations


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _describe_tokenizer(tok, indent: str = "") -> list[str]:
    lines = [
        f"{indent}type            tokenizer ({tok.config.quantizer.kind})",
        f"{indent}parameters      {_params(tok):,} (encoder {_params(tok.encoder):,}, "
        f"decoder {_params(tok.decoder):,}, quantizer {_params(tok.quantizer):,})",
        f"{indent}image size      {tok.image_size} px, downsampling {tok.downsample_factor}",
        f"{indent}latent          {tok.latent_channels} channels, {tok.scales[-1]}x{tok.scales[-1]}",
        f"{indent}codebook        {tok.codebook_size} codes",
        f"{indent}scales          {', '.join(map(str, tok.scales))}",
        f"{indent}tokens / image  {tok.num_tokens}",
    ]
    codebook = tok.quantizer.codebook
    if int(codebook.num_updates) > 0 or float(codebook.usage.sum()) > 0:
        usage = ", ".join(f"{100 * u:.0f}%" for u in codebook.usage_fraction().tolist())
        ppl = ", ".join(f"{p:.0f}" for p in codebook.perplexity().tolist())
        lines += [f"{indent}codebook usage  {usage} (per scale, from training statistics)",
                  f"{indent}perplexity      {ppl}"]
    return lines


def describe(path) -> str:
    from artok.pipeline import Pipeline, from_pretrained
    from artok.tokenizers import Tokenizer

    model = from_pretrained(path)
    lines = [f"checkpoint      {path}"]
    parts = [("", model)] if not isinstance(model, Pipeline) else [
        ("tokenizer: ", model.tokenizer), ("generator: ", model.generator)]
    for label, m in parts:
        if label:
            lines.append(label.rstrip(" "))
        indent = "  " if label else ""
        if isinstance(m, Tokenizer):
            lines += _describe_tokenizer(m, indent)
        elif hasattr(m, "describe"):
            lines += [indent + line for line in m.describe()]
        else:
            lines.append(f"{indent}parameters      {_params(m):,}")
        lines.append(f"{indent}config")
        lines += [indent + "  " + line for line in m.config.to_yaml().splitlines()]
    return "\n".join(lines)


def register(sub, formatter_class) -> None:
    p = sub.add_parser("info", help="describe an artok checkpoint", formatter_class=formatter_class)
    p.add_argument("checkpoint", help="artok checkpoint directory (tokenizer, generator or pipeline)")
    p.set_defaults(func=lambda a: print(describe(a.checkpoint)))
