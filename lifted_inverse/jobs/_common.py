"""Helpers shared by the jobs: named test images and their PSNR data range, the default noise
rule, option checks and the ``config`` record every job writes next to its results.

Errors are ``ValueError("field: why")`` with ``field`` the option's name (the CLI shows it as
``--field``), one line each.
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import torch

from ..datasets import builtin_image, ellipse_phantom, load_image, shepp_logan
from ..datasets._util import NORMALIZATIONS

NOISE_TYPES = ("auto", "absolute", "relative")
#: default Gaussian noise level: relative to rms(Ax) for CT; otherwise absolute, in the image's units
#: (0.1 is 10 % of the range of an image in [0, 1]; give ``noise`` for stored values such as HU)
DEFAULT_NOISE = {"relative": 0.01, "absolute": 0.1}


#: side length of the phantoms (``shepp_logan``, ``ellipses``) when no size is given
PHANTOM_SIZE = 128


def is_image_file(name: str) -> bool:
    """Whether :func:`load_named_image` reads ``name`` as a file (it has a suffix, a ``/``, or
    exists) rather than as a phantom or built-in image name."""
    path = Path(name)
    return bool(path.suffix) or "/" in name or path.exists()


def load_named_image(name: str, size: int | None = None, seed: int = 0, normalize: str = "dtype") -> torch.Tensor:
    """``shepp_logan``, ``ellipses`` (seeded), a built-in scikit-image name or an image file path,
    as a gray ``(1, H, W)`` tensor.

    Phantoms and built-in images are defined on [0, 1]; a file's values follow ``normalize``
    (:data:`~lifted_inverse.datasets._util.NORMALIZATIONS`: ``"none"`` keeps them, e.g. an
    int16 CT slice in Hounsfield units; ``"dtype"`` maps 8/16-bit ranges onto [0, 1];
    ``"minmax"`` maps the image's range onto [0, 1], for every source). ``size`` resizes to
    ``size × size`` only when given; without it a file or built-in image keeps its own shape,
    square or not, and phantoms are :data:`PHANTOM_SIZE` pixels wide. NaN / infinite values
    are a ``ValueError`` naming the image."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    key = name.lower().replace("-", "_")
    if key in ("shepp_logan", "shepp_logan_phantom"):
        image = shepp_logan(size or PHANTOM_SIZE)
    elif key in ("ellipses", "ellipse"):
        image = ellipse_phantom(0, size or PHANTOM_SIZE, seed)
    elif is_image_file(name):
        return load_image(Path(name), size, gray=True, normalize=normalize)
    else:
        image = builtin_image(name, size, gray=True)
    if normalize == "minmax":
        lo, hi = image.min(), image.max()
        if not hi > lo:
            raise ValueError(f"image: {name} is constant; --normalize minmax needs max > min")
        image = (image - lo) / (hi - lo)
    return image


def data_range(image: torch.Tensor) -> float:
    """The data range ``R`` of PSNR / SSIM for a ground truth: 1 for an image within [0, 1]
    (phantoms, built-in images, normalised files), else the range of its values
    ``max − min`` (an image in Hounsfield units: its HU span). A constant image outside [0, 1]
    has no range: ``ValueError``."""
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0:
        return 1.0
    if not hi > lo:
        raise ValueError(f"image: constant ({lo:g}); PSNR and SSIM need a data range")
    return hi - lo


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
