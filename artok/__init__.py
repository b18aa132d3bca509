"""artok: autoregressive image generation over learned image tokens.

The top-level names load their module on first use (PEP 562), so ``import artok`` (or ``import
artok.encoders``) imports no model, no diffusers and no accelerate: a command pays only for what it runs.
Where each name lives: ``artok.pipeline`` (models and pipelines), ``artok.checkpoint`` (saving and loading one
model), ``artok.config`` (configs and presets).
"""
from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointError": "artok.checkpoint",
    "ConfigError": "artok.config",
    "GeneratorConfig": "artok.config",
    "QuantizerConfig": "artok.config",
    "TokenizerConfig": "artok.config",
    "generator_config": "artok.config.presets",
    "tokenizer_config": "artok.config.presets",
    "Pipeline": "artok.pipeline",
    "build_generator": "artok.pipeline",
    "build_tokenizer": "artok.pipeline",
    "from_pretrained": "artok.pipeline",
    "push_to_hub": "artok.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif importlib.util.find_spec(f"artok.{name}") is not None:  # a subpackage: artok.hub.Pipeline, artok.convert
        value = importlib.import_module(f"artok.{name}")
    else:
        raise AttributeError(f"module 'artok' has no attribute '{name}'")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
