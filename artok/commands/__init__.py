"""CLI subcommands. Each module defines ``register(subparsers, formatter_class)``; add new ones here."""
from artok.commands import convert, edit, encode, eval, info, push, quickstart, sample, train

COMMAND_MODULES = [quickstart, train, encode, sample, edit, eval, convert, info, push]
