"""Output files: atomic, with the permissions the umask gives, and strict JSON.

* :func:`atomic_path`: a crash never leaves a half-written checkpoint, figure or HDF5 file. The
  temporary file ``.NAME.PID-HOST.TOKEN.tmp`` next to the target is created with mode
  ``0o666 & ~umask`` (the mode any other new file gets), removed on every exit path that runs
  Python code (an exception, ``KeyboardInterrupt``, ``SystemExit`` — the CLI turns SIGTERM into
  one), and one left by a process that was killed outright (SIGKILL, power loss) is removed by
  the next write of the same target on the same host, once its process is gone.
* :func:`strict_json`: a non-finite float (``inf``, ``nan``) is no JSON value; it becomes ``null``
  and its reason is listed under ``"non_finite"`` by JSON pointer (RFC 6901), e.g.
  ``{"psnr": null, "non_finite": {"/psnr": "inf"}}``. :func:`write_json` writes such a file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the key under which :func:`strict_json` lists the non-finite values it replaced
NON_FINITE_KEY = "non_finite"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` for ``target`` whose writing process, on
    this host, no longer exists. Returns the removed paths. Temporaries of live processes and of
    other hosts (a shared file system) are left alone."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)-([A-Za-z0-9_-]*)\.[0-9a-f]+\.tmp$")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or match.group(2) != host or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success ``os.replace`` it onto ``path``.

    Usage: ``with atomic_path("run/ckpt.pt") as tmp: torch.save(obj, tmp)``. On an exception the
    temporary file is removed and ``path`` is left untouched. The file gets the mode a new file
    gets under the process umask (module docstring).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    prefix = f".{target.name}.{os.getpid()}-{_host()}."
    while True:
        tmp = target.parent / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:  # O_EXCL: never another writer's file; mode 0o666 is reduced by the umask
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``; if any was replaced and
    ``value`` is a dict, the copy holds ``{"non_finite": {pointer: "inf" | "-inf" | "nan"}}``
    (module docstring). NumPy scalars become Python numbers; tuples become lists."""
    notes: dict[str, str] = {}

    def walk(v, pointer: str):
        if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # NumPy / torch scalars
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            notes[pointer] = str(v)
            return None
        if isinstance(v, dict):
            return {str(k): walk(x, f"{pointer}/{_pointer_token(str(k))}") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{pointer}/{i}") for i, x in enumerate(v)]
        return v

    clean = walk(value, "")
    if notes and isinstance(clean, dict):
        clean[NON_FINITE_KEY] = {**clean.get(NON_FINITE_KEY, {}), **notes}
    return clean


def dumps_json(value: Any) -> str:
    """Strict JSON text of :func:`strict_json` ``(value)`` (indented, with a final newline)."""
    return json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write :func:`dumps_json` ``(value)`` to ``path`` atomically."""
    atomic_write_text(path, dumps_json(value))
