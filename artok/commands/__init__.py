"""CLI subcommands. Each module defines ``register(subparsers, formatter_class)``; add new ones here."""
from artok.commands import convert, encode, eval, info, sample, train

COMMAND_MODULES = [info, convert, encode, sample, train, eval]
