"""Synthetic phantoms: Shepp-Logan and seeded random ellipses, as (C, H, W) tensors in [0, 1]."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ._util import parse_size, to_chw_tensor


def shepp_logan(size: int | Sequence[int] = 128) -> torch.Tensor:
    """The (modified) Shepp-Logan phantom of ``skimage.data`` resized to ``size``: (1, H, W) in [0, 1]."""
    from skimage.data import shepp_logan_phantom

    return to_chw_tensor(shepp_logan_phantom(), parse_size(size), gray=True)


def _ellipse_image(rng: np.random.Generator, hw: tuple[int, int], n_ellipses: int) -> np.ndarray:
    """Sum of ``n_ellipses`` random ellipses inside the unit disc, normalised to [0, 1].

    Each ellipse: centre uniform in the disc of radius 0.6, semi-axes in [0.05, 0.45], angle in
    [0, pi), additive intensity in [-0.5, 1] (negative values carve holes, like Shepp-Logan).
    """
    h, w = hw
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    image = np.zeros(hw)
    for _ in range(n_ellipses):
        r, phi = 0.6 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        cy, cx = r * np.sin(phi), r * np.cos(phi)
        a, b = rng.uniform(0.05, 0.45, size=2)
        theta = rng.uniform(0, np.pi)
        value = rng.uniform(-0.5, 1.0)
        c, s = np.cos(theta), np.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / a
        v = (-(xx - cx) * s + (yy - cy) * c) / b
        image[u * u + v * v <= 1.0] += value
    image = np.clip(image, 0.0, None)
    peak = image.max()
    return image / peak if peak > 0 else image


def ellipse_phantom(index: int, size: int | Sequence[int] = 128, seed: int = 0,
                    n_ellipses: tuple[int, int] = (3, 10)) -> torch.Tensor:
    """Phantom number ``index`` of the stream ``seed``: (1, H, W) float32 in [0, 1].

    Each phantom has its own generator ``SeedSequence([seed, index])``, so phantom ``i`` does not
    depend on how many phantoms are drawn, nor on the order.
    """
    if index < 0:
        raise ValueError(f"index: expected >= 0, got {index}")
    lo, hi = n_ellipses
    if not 1 <= lo <= hi:
        raise ValueError(f"n_ellipses: expected 1 <= low <= high, got {n_ellipses}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    hw = parse_size(size)
    count = int(rng.integers(lo, hi + 1))
    return to_chw_tensor(_ellipse_image(rng, hw, count), None, gray=True)


def random_ellipses(n: int, size: int | Sequence[int] = 128, seed: int = 0) -> torch.Tensor:
    """``n`` random-ellipse phantoms stacked: (n, 1, H, W) float32 in [0, 1]."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    return torch.stack([ellipse_phantom(i, size, seed) for i in range(n)])


class EllipseDataset(Dataset):
    """``n`` random-ellipse phantoms (1, H, W), generated on access (deterministic per index)."""

    def __init__(self, n: int, size: int | Sequence[int] = 128, seed: int = 0):
        if n < 1:
            raise ValueError(f"n: expected >= 1, got {n}")
        self.n, self.size, self.seed = int(n), parse_size(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} phantoms")
        return ellipse_phantom(index % self.n, self.size, self.seed)
