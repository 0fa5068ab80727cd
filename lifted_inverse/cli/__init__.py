"""``lifted-inverse`` command line: argument parsing only; each command calls library code.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..runtime import retain_freed_memory

COMMANDS = ("reconstruct", "data", "train", "invert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifted-inverse",
        description="Forward operators, classical reconstruction, lifted Bregman training and "
        "stable inversion of neural networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a command whose module is not written yet
            if err.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():  # option name -> its flag, for the command's error messages
        command.set_defaults(flags={a.dest: a.option_strings[-1] for a in command._actions
                                    if a.option_strings and a.dest != "help"})
    return parser


def _flag_message(message: str, flags: dict) -> str:
    """``'angles: …'`` → ``'--angles: …'`` (``'progress: …'`` → ``'--no-progress: …'``) where the
    head is the destination of one of the command's flags: the jobs name their options by field
    name, the user typed the flag."""
    head, sep, rest = message.partition(":")
    return f"{flags[head]}:{rest}" if sep and head in flags else message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    retain_freed_memory()     # large temporaries reuse freed heap memory (lifted_inverse.runtime)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError, OSError) as err:
        # one readable line, non-zero exit
        msg = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        if isinstance(err, ValueError):
            msg = _flag_message(msg, args.flags)
        print(f"lifted-inverse {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
