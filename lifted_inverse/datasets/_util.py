"""Shared helpers for the datasets: array -> (C, H, W) float tensor in [0, 1], resizing."""
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


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """Integer images scaled by their dtype's maximum, bool to {0, 1}, floats clipped to [0, 1]."""
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / float(np.iinfo(image.dtype).max)
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def to_chw_tensor(
    image: np.ndarray, size: tuple[int, int] | None = None, gray: bool = True
) -> torch.Tensor:
    """(H, W) or (H, W, C) array in any dtype -> float32 tensor (C, H, W) in [0, 1].

    ``gray=True`` gives one channel (ITU-R 601 luma for RGB, alpha dropped); ``gray=False`` gives
    three channels (gray images are repeated). ``size`` resizes with anti-aliasing.
    """
    from skimage.color import rgb2gray  # local import: skimage is slow to import

    img = to_unit_float(image)
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
        img = resize(img, out_shape, order=1, anti_aliasing=True, mode="reflect")
    img = np.clip(img, 0.0, 1.0)
    if img.ndim == 2:
        img = img[None]
    else:
        img = np.moveaxis(img, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
