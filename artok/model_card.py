"""The model card (``README.md``) that ``push_to_hub`` writes into a Hub repository: what the checkpoint is,
its configuration, its training data and metrics when the export recorded them, and how to load it.

Text only: ``artok.checkpoint`` reads the folder and passes the parsed ``config.json`` files, the parameter
counts and the training summary (``training.json``, written by ``artok train`` beside its export) here.
"""
from __future__ import annotations

import json
from typing import Any

KINDS = {  # model_type → (what it is, the Hub tags)
    "tokenizer": ("image tokenizer: it turns images into discrete token ids per scale and back",
                  ["image-tokenizer"]),
    "hybrid_tokenizer": ("hybrid image tokenizer (HART): it turns images into discrete token ids per scale plus "
                         "a continuous residual, and back", ["image-tokenizer", "hart"]),
    "generator": ("next-scale autoregressive transformer (VAR) over image token ids", ["image-generation", "var"]),
    "hart_transformer": ("HART transformer: next-scale token prediction with a residual diffusion head",
                         ["image-generation", "hart"]),
    "pipeline": ("image generation pipeline: a tokenizer and a generator saved together (`tokenizer/` and "
                 "`generator/`)", ["image-generation"]),
}


def _scales(cfg: dict) -> list[int] | None:
    scales = cfg.get("scales") or (cfg.get("quantizer") or {}).get("scales")
    return list(scales) if scales else None


def summary(model_type: str, cfg: dict, num_parameters: int | None) -> list[tuple[str, str]]:
    """(field, value) rows describing one model from its config."""
    rows = [("model type", f"`{model_type}`")]
    if num_parameters is not None:
        rows.append(("parameters (with buffers)", f"{num_parameters:,}"))
    quantizer, encoder = cfg.get("quantizer") or {}, cfg.get("encoder") or {}
    scales = _scales(cfg)
    for field, value in (("image size", cfg.get("image_size")), ("encoder", encoder.get("kind")),
                         ("quantizer", quantizer.get("kind")),
                         ("codebook size", cfg.get("codebook_size") or quantizer.get("codebook_size")),
                         ("latent channels", cfg.get("latent_channels")),
                         ("scales", ", ".join(map(str, scales)) if scales else None),
                         ("tokens per image", sum(s * s for s in scales) if scales else None),
                         ("depth", cfg.get("depth")), ("width", cfg.get("embed_dim")), ("heads", cfg.get("num_heads")),
                         ("classes", cfg.get("num_classes")), ("text context width", cfg.get("context_dim") or None)):
        if value is not None:
            rows.append((field, str(value)))
    return rows


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _training(training: dict | None) -> list[str]:
    if not training:
        return ["Not recorded: this folder holds no `training.json` (it was not exported by `artok train`)."]
    lines = []
    data = training.get("data") or {}
    if data:
        described = ", ".join(f"{k} `{v}`" for k, v in data.items() if v not in (None, "", [], {}))
        lines.append(f"- data: {described}")
    for field, key in (("optimizer steps", "steps"), ("global batch", "global_batch"),
                       ("training time (minutes)", "minutes")):
        if training.get(key) is not None:
            lines.append(f"- {field}: {_number(training[key])}")
    metrics = {**(training.get("metrics") or {}), **(training.get("evaluation") or {})}
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if shown:
        lines += ["", "Metrics at the end of training (the last logged values; evaluation on held-out images where "
                  "named so):", "", *_table([(k, _number(v)) for k, v in sorted(shown.items())])]
    return lines or ["Not recorded."]


def _usage(repo_id: str, model_type: str, parts: dict) -> list[str]:
    lines = ["```python", "import artok", ""]
    if model_type == "pipeline":
        generator_cfg = parts["generator"][1]
        text = (generator_cfg.get("context_dim") or 0) > 0
        lines += [f'pipe = artok.from_pretrained("{repo_id}")  # .tokenizer and .generator',
                  "```", "", "Sample from the command line:", "", "```bash",
                  f'artok sample {repo_id} --prompt "a photo of a cat" --out samples/' if text else
                  f"artok sample {repo_id} --classes 0 1 2 3 --out samples/", "```"]
    elif model_type in ("tokenizer", "hybrid_tokenizer"):
        lines += [f'tok = artok.from_pretrained("{repo_id}")',
                  "ids = tok.tokenize(images)        # images: (B, 3, H, W) in [-1, 1] -> ids per scale",
                  "reconstructed = tok.detokenize(ids)", "```"]
    else:
        lines += [f'generator = artok.from_pretrained("{repo_id}")',
                  "# sample with a matching tokenizer: artok.sampling.generate(generator, tokenizer, labels, cfg_scale=1.5)",
                  "```"]
    return lines


def render(repo_id: str, model_type: str, parts: dict[str, tuple[str, dict, int | None]],
           training: dict | None = None) -> str:
    """The card's markdown. ``parts``: name ("" for a single model, else ``tokenizer``/``generator``) →
    (model_type, config, parameter count)."""
    what, tags = KINDS.get(model_type, (f"`{model_type}`", []))
    tags = ["artok", *tags, model_type]
    for kind, _, _ in parts.values():  # a pipeline is tagged with what it holds
        tags += [*KINDS.get(kind, ("", []))[1], kind]
    front = ["---", "library_name: artok", "tags:", *[f"- {t}" for t in dict.fromkeys(tags)], "---"]
    lines = [*front, "", f"# {repo_id.split('/')[-1]}", "", f"An artok {what}.", "",
             "## Use it with artok", "", *_usage(repo_id, model_type, parts), "",
             "## Model", ""]
    for name, (kind, cfg, count) in parts.items():
        if name:
            lines += [f"### {name}", ""]
        lines += [*_table(summary(kind, cfg, count)), ""]
    lines += ["## Training", "", *_training(training), "", "## Configuration", ""]
    for name, (kind, cfg, _) in parts.items():
        label = f"{name}/config.json" if name else "config.json"
        lines += ["<details>", f"<summary>{label}</summary>", "", "```json",
                  json.dumps({"model_type": kind, "config": cfg}, indent=2), "```", "", "</details>", ""]
    return "\n".join(lines)
