"""Commands with targets (``artok train tokenizer``, ``artok eval generator``): one subparser per target."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_target(module: str, function: str) -> Callable:
    """A target registrar imported only when the CLI is built (the generator modules import their command
    module back, so they cannot be imported at its top)."""
    def register(targets, formatter_class) -> None:
        getattr(importlib.import_module(module), function)(targets, formatter_class)

    return register


def register_with_targets(sub, name: str, help: str, targets: list[Callable], formatter_class) -> None:
    """Add command ``name`` whose first argument picks one of ``targets`` (each adds its own subparser)."""
    p = sub.add_parser(name, help=help, formatter_class=formatter_class)
    group = p.add_subparsers(dest="target", metavar="TARGET")
    group.required = True
    for add in targets:
        add(group, formatter_class)
