"""Helpers shared by the jobs: named test images, the default noise rule, option checks and
the ``config`` record every job writes next to its results.

Errors are ``ValueError("field: why")`` with ``field`` the option's name (the CLI shows it as
``--field``), one line each.
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import torch

from ..datasets import builtin_image, ellipse_phantom, load_image, shepp_logan

NOISE_TYPES = ("auto", "absolute", "relative")
#: default Gaussian noise level: relative to rms(Ax) for CT, absolute for images in [0, 1] otherwise
DEFAULT_NOISE = {"relative": 0.01, "absolute": 0.1}


def load_named_image(name: str, size: int, seed: int = 0) -> torch.Tensor:
    """``shepp_logan``, ``ellipses`` (seeded), a built-in scikit-image name or an image file path,
    as a gray ``(1, size, size)`` tensor in [0, 1]."""
    key = name.lower().replace("-", "_")
    if key in ("shepp_logan", "shepp_logan_phantom"):
        return shepp_logan(size)
    if key in ("ellipses", "ellipse"):
        return ellipse_phantom(0, size, seed)
    path = Path(name)
    if path.suffix or path.exists() or "/" in name:
        return load_image(path, size, gray=True)
    return builtin_image(name, size, gray=True)


def noise_rule(operator: str, noise: float | None, noise_type: str = "auto") -> tuple[float, bool]:
    """``(level, relative)`` of the Gaussian measurement noise: ``auto`` is relative to rms(Ax)
    for ``ct`` and absolute otherwise; an unset ``noise`` takes :data:`DEFAULT_NOISE`."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type: expected one of {', '.join(NOISE_TYPES)}, got {noise_type!r}")
    relative = noise_type == "relative" or (noise_type == "auto" and operator == "ct")
    level = DEFAULT_NOISE["relative" if relative else "absolute"] if noise is None else float(noise)
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"noise: expected a finite level >= 0, got {level}")
    return level, relative


def check_min(name: str, value, minimum) -> None:
    """Refuse ``value < minimum`` (an explicit 0 is an error, never a request for the default)."""
    if value is not None and not value >= minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {value}")


def refuse(options, names, why: str) -> None:
    """``ValueError`` naming the first of ``names`` set (not None) on ``options``: it would not
    take effect (``why``)."""
    for name in names:
        if getattr(options, name) is not None:
            raise ValueError(f"{name}: {why}")


def config_record(options, resolved: dict) -> dict:
    """The ``config`` written to metrics.json: every option of the dataclass ``options`` as the
    job uses it (``resolved[name]``, else the given value; None where it does not apply) and its
    source in ``config["sources"]``: ``user`` (given) or ``default`` (left unset, None)."""
    out, sources = {}, {}
    for f in fields(options):
        given = getattr(options, f.name)
        out[f.name] = _plain(resolved.get(f.name, given))
        sources[f.name] = "default" if given is None else "user"
    out["sources"] = sources
    return out


def _plain(value):
    return str(value) if isinstance(value, Path) else value
