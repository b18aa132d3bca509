"""``artok`` command line: each subcommand lives in ``artok/commands/<name>.py`` and registers itself."""
from __future__ import annotations

import argparse
import sys

from artok.commands import COMMAND_MODULES


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="artok", description=__doc__.split(":")[0] + ": autoregressive image "
                                     "generation over learned image tokens.", formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only commands that take dotted config overrides (--train.lr=3e-4) accept unknown options
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        # user-facing errors (bad config, bad checkpoint, bad input) print one clear line, not a traceback
        print(f"artok {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
