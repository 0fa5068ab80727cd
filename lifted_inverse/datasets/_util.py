"""Shared helpers for the datasets: array -> (C, H, W) float tensor, value normalisation, resizing.

Normalisations (:data:`NORMALIZATIONS`), the only ways values are changed:

* ``"none"``: the values as stored (an int16 CT slice stays in Hounsfield units, a float TIFF
  keeps its range; bool becomes {0, 1});
* ``"dtype"``: an integer dtype's full range ``[min, max]`` mapped onto [0, 1]
  (``v ↦ (v − min)/(max − min)``: uint8 ``v/255``); bool {0, 1}; floats as stored (a float
  carries no nominal range);
* ``"minmax"``: the image's own range mapped onto [0, 1], ``v ↦ (v − min v)/(max v − min v)``.

Nothing is clipped. Resizing (anti-aliased, bilinear) happens only when a ``size`` is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def parse_size(size: int | Sequence[int] | None, name: str = "size") -> tuple[int, int] | None:
    """``None`` -> ``None``; ``n`` -> ``(n, n)``; ``(h, w)`` -> ``(h, w)``; all entries >= 1."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        hw = tuple(int(s) for s in size)
        if len(hw) != 2:
            raise ValueError(f"{name}: expected an int or (height, width), got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"{name}: expected positive sizes, got {size!r}")
    return hw  # type: ignore[return-value]


NORMALIZATIONS = ("none", "dtype", "minmax")


def normalize_values(image: np.ndarray, normalize: str = "dtype", name: str = "image") -> np.ndarray:
    """``image`` as float64 under the normalisation ``normalize`` (module docstring). Raises
    ``ValueError`` naming ``name`` for NaN / infinite values, and for ``minmax`` of a constant
    image (no range to map)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected real pixel values, got dtype {image.dtype}")
    values = image.astype(np.float64)
    if image.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if normalize == "dtype" and image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        return (values - float(info.min)) / (float(info.max) - float(info.min))
    if normalize == "minmax":
        lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            raise ValueError(f"{name}: constant image ({lo:g}); --normalize minmax needs max > min")
        return (values - lo) / (hi - lo)
    return values


def to_chw_tensor(
    image: np.ndarray, size: tuple[int, int] | None = None, gray: bool = True, normalize: str = "dtype",
    name: str = "image",
) -> torch.Tensor:
    """(H, W) or (H, W, C) array in any dtype -> float32 tensor (C, H, W), values by
    :func:`normalize_values` (``"dtype"``: 8- and 16-bit images in [0, 1]).

    ``gray=True`` gives one channel (ITU-R 601 luma for RGB, alpha dropped); ``gray=False`` gives
    three channels (gray images are repeated). ``size`` resizes with anti-aliasing; without it the
    image keeps its shape, square or not.
    """
    from skimage.color import rgb2gray  # local import: skimage is slow to import

    img = normalize_values(image, normalize, name)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] not in (1, 3):
        raise ValueError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got shape {img.shape}")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"image: expected a 2-D or 3-D array, got shape {img.shape}")
    if gray and img.ndim == 3:
        img = rgb2gray(img)
    if not gray and img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if size is not None and tuple(img.shape[:2]) != tuple(size):
        from skimage.transform import resize

        out_shape = tuple(size) + tuple(img.shape[2:])
        img = resize(img, out_shape, order=1, anti_aliasing=True, mode="reflect", preserve_range=True)
    if img.ndim == 2:
        img = img[None]
    else:
        img = np.moveaxis(img, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
