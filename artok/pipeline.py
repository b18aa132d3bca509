"""A tokenizer and a generator together: building models from presets, loading whatever a checkpoint directory
holds, and the pipeline folder (``tokenizer/`` + ``generator/``) that training exports and sampling reads.

``artok.from_pretrained(path)`` loads a tokenizer, a generator or a pipeline; ``build_tokenizer``,
``build_generator`` and ``build_hart`` build fresh models from a preset name or a config. A text-conditioned
pipeline also records its text encoder (``text_encoder.json``: a ``TextEncoderConfig``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from artok.checkpoint import (
    CONFIG_NAME, FORMAT_VERSION, MODEL_TYPES, CheckpointError, finish_save, read_config, resolve,
)
from artok.config import GeneratorConfig, HartConfig, TextEncoderConfig, TokenizerConfig
from artok.config.presets import GENERATORS, HARTS, TOKENIZERS
from artok.models import Generator
from artok.models.hart import HartTransformer
from artok.sampling import check_compatible
from artok.tokenizers import HybridTokenizer, Tokenizer


def build_tokenizer(name_or_config: str | TokenizerConfig, **overrides: Any) -> Tokenizer:
    """Build a tokenizer from a preset name or a config, e.g. ``build_tokenizer("tiny-var-vqvae")``."""
    cfg = TOKENIZERS.resolve(name_or_config, **overrides)
    return HybridTokenizer(cfg) if cfg.quantizer.kind == "hybrid" else Tokenizer(cfg)


def build_generator(name_or_config: str | GeneratorConfig, **overrides: Any) -> Generator:
    """Build a generator from a preset name or a config, e.g. ``build_generator("tiny-var")``."""
    return Generator(GENERATORS.resolve(name_or_config, **overrides))


def build_hart(name_or_config: str | HartConfig, **overrides: Any) -> HartTransformer:
    """Build a HART transformer from a preset name or a config, e.g. ``build_hart("tiny-hart-c2i")``."""
    return HartTransformer(HARTS.resolve(name_or_config, **overrides))


TEXT_ENCODER_NAME = "text_encoder.json"


# the sampling settings a pipeline may carry as its defaults, with their types (``artok sample`` flags)
SAMPLING_KEYS = {"cfg": float, "cfg_schedule": str, "top_k": int, "top_p": float, "temperature": float}


def check_sampling(sampling: dict | None, *, where: str) -> dict | None:
    """A pipeline's sampling defaults, checked: known keys, values of the right type (ints pass as floats)."""
    if sampling is None:
        return None
    if not isinstance(sampling, dict):
        raise CheckpointError(f"{where}: 'sampling' must be a mapping of {', '.join(SAMPLING_KEYS)}")
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown sampling setting(s) {', '.join(unknown)} (known: "
                              f"{', '.join(SAMPLING_KEYS)})")
    checked = {}
    for key, value in sampling.items():
        kind = SAMPLING_KEYS[key]
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value)))
        if not ok:
            raise CheckpointError(f"{where}: sampling setting {key} must be {kind.__name__}, got {value!r}")
        checked[key] = kind(value)
    return checked


class Pipeline:
    """A tokenizer and a generator saved side by side (``tokenizer/`` and ``generator/``); a text-conditioned
    generator's ``text_encoder`` record (``TextEncoderConfig``) goes beside them in ``text_encoder.json``, and
    ``directory`` is where the pipeline was loaded from (a relative text-encoder folder is looked up there).
    ``sampling`` holds the settings the pipeline is best sampled with (``SAMPLING_KEYS``: what a training
    recipe chose), kept in its ``config.json``; ``artok sample`` and ``artok eval generator`` use them where
    their flags are not given."""

    model_type = "pipeline"

    def __init__(self, tokenizer: Any, generator: Any, text_encoder: TextEncoderConfig | None = None, *,
                 directory: Path | None = None, sampling: dict | None = None) -> None:
        self.tokenizer, self.generator, self.text_encoder = tokenizer, generator, text_encoder
        self.directory = directory
        self.sampling = check_sampling(sampling, where="Pipeline")

    @property
    def text_conditioned(self) -> bool:
        config = getattr(self.generator, "config", None)
        return getattr(config, "context_dim", 0) > 0

    def save_pretrained(self, directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **push_options) -> Path:
        """Write ``tokenizer/``, ``generator/`` and the pipeline's ``config.json``; with ``push_to_hub=True``
        upload the folder to ``repo_id`` (see ``artok.checkpoint.push_to_hub`` for the options)."""
        d = Path(directory)
        self.tokenizer.save_pretrained(d / "tokenizer")
        self.generator.save_pretrained(d / "generator")
        record = d / TEXT_ENCODER_NAME
        if self.text_encoder is not None:
            record.write_text(self.text_encoder.to_json())
        else:
            record.unlink(missing_ok=True)
        meta = {"model_type": "pipeline", "format_version": FORMAT_VERSION}
        if self.sampling is not None:
            meta["sampling"] = self.sampling
        (d / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        return finish_save(d, push=push_to_hub, repo_id=repo_id, **push_options)

    def to(self, *args, **kwargs) -> "Pipeline":
        self.tokenizer.to(*args, **kwargs)
        self.generator.to(*args, **kwargs)
        return self


def from_pretrained(path: str | Path, *, map_location: str | torch.device = "cpu", revision: str | None = None):
    """Load a tokenizer, a generator or a pipeline from an artok checkpoint directory, or from a Hugging Face
    Hub repository id (``user/name``, downloaded whole into the standard cache at ``revision``: a branch, tag
    or commit)."""
    d = resolve(path, revision=revision)
    meta = read_config(d)
    kind = meta.get("model_type")
    if kind == "pipeline":
        record = d / TEXT_ENCODER_NAME
        text_encoder = TextEncoderConfig.from_dict(json.loads(record.read_text()), where=str(record)) \
            if record.exists() else None
        sampling = check_sampling(meta.get("sampling"), where=str(d / CONFIG_NAME))
        return Pipeline(from_pretrained(d / "tokenizer", map_location=map_location),
                        from_pretrained(d / "generator", map_location=map_location), text_encoder, directory=d,
                        sampling=sampling)
    if kind not in MODEL_TYPES:
        raise CheckpointError(f"{d / CONFIG_NAME}: unknown model_type '{kind}' (known: {', '.join(sorted(MODEL_TYPES))})")
    return MODEL_TYPES[kind].from_pretrained(d, map_location=map_location)


def open_pipeline(checkpoint: str | Path, device: str | torch.device) -> Pipeline:
    """The ``Pipeline`` of a checkpoint, in eval mode on ``device``; checked to fit together."""
    model = from_pretrained(checkpoint)
    if not isinstance(model, Pipeline):
        raise ValueError(f"{checkpoint} holds a {getattr(model, 'model_type', type(model).__name__)}; artok sample "
                         "needs a pipeline directory with tokenizer/ and generator/ (see `artok convert var`)")
    check_compatible(model.generator, model.tokenizer)
    model.tokenizer.to(device).eval()
    model.generator.to(device).eval()
    return model


def load_pipeline(checkpoint: str | Path, device: str | torch.device):
    """(tokenizer, generator) of a pipeline checkpoint, in eval mode on ``device``; checked to fit together."""
    model = open_pipeline(checkpoint, device)
    return model.tokenizer, model.generator
