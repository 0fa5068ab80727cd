"""Checkpoints of lifted (or backprop) training that resume exactly.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it: ``model`` (the user's ``state_dict``),
``solver`` (solver / optimiser state), ``states`` (per-sample lifted states), ``rng`` (the
batch-order generator state), ``epoch``, ``history`` and free-form ``config``. Files are written
atomically (temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_path

FORMAT = "lifted-inverse-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, *, model_state: dict, solver_state: dict | None,
                    states: dict | None, rng: torch.Tensor, epoch: int, history: list,
                    config: dict) -> Path:
    """Write a checkpoint atomically; returns the path."""
    payload = {"format": FORMAT, "model": model_state, "solver": solver_state, "states": states,
               "rng": rng, "epoch": int(epoch), "history": history, "config": config}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"checkpoint: cannot read {str(path)!r} ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a lifted-inverse checkpoint")
    return payload
