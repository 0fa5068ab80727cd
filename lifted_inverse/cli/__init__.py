"""``lifted-inverse`` command line: argument parsing only; each command calls library code.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit code.

What every command shares is done here, once:

* options: ``--threads N`` (:func:`lifted_inverse.runtime.set_threads`, default one thread) and
  ``--progress`` / ``--no-progress`` (default: bars when stderr is a terminal, none in logs);
* checks before any work: ``--out`` can be written (an existing file where a folder is expected,
  a folder where a file is expected, a folder that cannot be written are refused), and every
  input file or folder the options name exists;
* plain-text help: the commands use their module docstrings as descriptions; reST markup
  (double backquotes, ``:func:`` roles) is removed;
* exits: 0 on success, 2 with one line naming the option for bad input, 130 with one line on
  Ctrl-C, 143 on SIGTERM (after the temporary files of :func:`lifted_inverse.io.atomic_path`
  are removed).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import signal
import sys
import tempfile
from pathlib import Path

from ..runtime import retain_freed_memory, set_threads

COMMANDS = ("reconstruct", "data", "train", "invert")
#: commands whose ``--out`` is a file; the others write into a folder
OUT_IS_FILE = frozenset({"data"})
#: options that name an input: destination -> "file", "dir" or "path" (either)
INPUT_PATHS = {"checkpoint": "file", "resume": "file", "folder": "dir", "data": "path",
               "measurement": "file", "ground_truth": "file", "angles_file": "file", "weights": "file",
               "target": "file"}
#: options that name either a built-in (no suffix, no "/") or a file that must exist
NAME_OR_FILE = ("image", "model")

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str | None) -> str | None:
    """``text`` without reST markup: ``:func:`~a.b``` -> ``b``, ``:mod:`a.b``` -> ``a.b``,
    double backquotes dropped."""
    if not text:
        return text
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _LITERAL.sub(r"\1", text)


def _add_shared_options(command: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--progress`` / ``--no-progress`` where the command has not its own."""
    have = command._option_string_actions
    if "--threads" not in have:
        command.add_argument("--threads", type=int, default=None,
                             help="intra-op threads (torch.set_num_threads); default 1, which keeps a run "
                                  "fast when other jobs share the cores")
    if "--progress" not in have:
        command.add_argument("--progress", dest="progress", action="store_const", const=True,
                             help="show progress bars (default: when stderr is a terminal)")
    if "--no-progress" not in have:
        command.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                             help="no progress bars")
    command.set_defaults(progress=None)


def _strip_markup(parser: argparse.ArgumentParser) -> None:
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if action.help not in (None, argparse.SUPPRESS):
            action.help = plain_text(action.help)
    for group in parser._action_groups:
        group.description = plain_text(group.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifted-inverse",
        description="Forward operators, classical reconstruction, lifted Bregman training and "
        "stable inversion of neural networks.",
    )
    package = sys.modules[__name__.rpartition(".")[0]]  # lifted_inverse, imported before its cli
    parser.add_argument("--version", action="version", version=f"lifted-inverse {package.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a command whose module is not written yet
            if err.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():
        _add_shared_options(command)
        _strip_markup(command)
        # option name -> its flag (the first registered one), for the command's error messages
        command.set_defaults(flags={a.dest: a.option_strings[-1] for a in reversed(command._actions)
                                    if a.option_strings and a.dest != "help"})
    _strip_markup(parser)
    return parser


def _flag_message(message: str, flags: dict) -> str:
    """``'angles: …'`` → ``'--angles: …'`` (``'progress: …'`` → ``'--no-progress: …'``) where the
    head is the destination of one of the command's flags: the jobs name their options by field
    name, the user typed the flag."""
    head, sep, rest = message.partition(":")
    return f"{flags[head]}:{rest}" if sep and head in flags else message


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, so it holds for root and for
    read-only file systems alike)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_out(out: str | Path, is_file: bool) -> None:
    """``ValueError("out: …")`` unless ``out`` can be written: a folder (``is_file`` False) or a
    file, existing or to be created (with its missing parent folders)."""
    out = Path(out)
    if out.exists():
        if is_file and out.is_dir():
            raise ValueError(f"out: {out} is a folder; expected a file name")
        if not is_file and not out.is_dir():
            raise ValueError(f"out: {out} exists and is not a folder")
    folder = out.parent if is_file or not out.exists() else out
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"out: {existing} is a file, so {out} cannot be created")
    if not _writable(existing):
        raise ValueError(f"out: cannot write into {existing}")


def check_inputs(args: argparse.Namespace) -> None:
    """``ValueError`` naming the option whose input file or folder does not exist."""
    for dest, kind in INPUT_PATHS.items():
        value = getattr(args, dest, None)
        if value is None or not isinstance(value, (str, Path)):
            continue
        path = Path(value)
        if kind == "file" and not path.is_file():
            raise ValueError(f"{dest}: {'is a folder, not a file' if path.is_dir() else 'no such file'}: {path}")
        if kind == "dir" and not path.is_dir():
            raise ValueError(f"{dest}: {'is a file, not a folder' if path.exists() else 'no such folder'}: {path}")
        if kind == "path" and not path.exists():
            raise ValueError(f"{dest}: no such file or folder: {path}")
    for dest in NAME_OR_FILE:
        value = getattr(args, dest, None)
        if isinstance(value, str) and (Path(value).suffix or "/" in value) and ":" not in value \
                and not Path(value).is_file():
            raise ValueError(f"{dest}: no such file: {value}")


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C, so temporary files are removed
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    retain_freed_memory()     # large temporaries reuse freed heap memory (lifted_inverse.runtime)
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may install signal handlers
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        set_threads(getattr(args, "threads", None))
        if getattr(args, "out", None) is not None:
            check_out(args.out, args.command in OUT_IS_FILE)
        check_inputs(args)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError, OSError) as err:
        # one readable line, non-zero exit
        msg = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        if isinstance(err, ValueError):
            msg = _flag_message(msg, args.flags)
        print(f"lifted-inverse {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lifted-inverse {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:
        if stop.code != 128 + signal.SIGTERM:
            raise
        print(f"lifted-inverse {args.command}: terminated", file=sys.stderr)
        return int(stop.code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
