"""Command-line configs for training scripts: ``--config x.yaml`` plus dotted overrides."""
from __future__ import annotations

from pathlib import Path

import yaml

from artok.config import Config, ConfigError


def parse_overrides(items: list[str]) -> dict:
    """``["--train.lr=3e-4", "--data.source", "folder"]`` → {"train.lr": "3e-4", "data.source": "folder"};
    values are read as YAML, so ``null``, ``true``, ``[0.9, 0.95]`` and numbers get their types."""
    overrides, i = {}, 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) == 2:
            raise ConfigError(f"expected a dotted override such as --train.lr=3e-4, got '{item}'")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ConfigError(f"override --{key} has no value")
            value, i = items[i + 1], i + 1
        if "." not in key:
            raise ConfigError(f"override --{key}: name a section and a key, e.g. --train.{key}")
        overrides[key] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return overrides


def load_config(config_class: type[Config], path: str | Path | None, overrides: list[str] | dict | None = None):
    """The config in ``path`` (defaults when None) with overrides applied."""
    cfg = config_class.from_yaml(path) if path is not None else config_class()
    if overrides:
        cfg = cfg.override(overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return cfg
