"""Pixel masking (inpainting forward model)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import LinearOperator, as_image_shape

__all__ = ["Mask", "binary_mask", "random_mask"]


def binary_mask(mask) -> torch.Tensor:
    """``mask`` (tensor, array or nested lists; boolean or 0/1 numbers) as a float64 tensor;
    ``ValueError`` naming ``mask`` for NaN/Inf or any other value."""
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    m = m.detach().to(torch.float64)
    if not bool(torch.isfinite(m).all()):
        raise ValueError("mask: contains NaN or Inf values")
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask: expected only 0/1 (or boolean) values")
    return m


class Mask(LinearOperator):
    """``(A x)[c, i, j] = m[c, i, j] x[c, i, j]`` with a 0/1 mask ``m`` broadcast to ``(C, H, W)``.

    Self-adjoint (``A^* = A``), ``||A|| = 1`` unless the mask is all zero. Missing pixels are
    stored as zeros, so the output has the input's shape. ``image_shape``: ``(C, H, W)``,
    ``(H, W)`` (one channel) or an int ``n`` (``(1, n, n)``).
    """

    def __init__(self, image_shape: int | Sequence[int], mask):
        shape = as_image_shape(image_shape)
        m = binary_mask(mask)
        try:
            m = torch.broadcast_to(m, shape).clone()
        except RuntimeError:
            raise ValueError(f"mask: shape {tuple(m.shape)} does not broadcast to {shape}") from None
        super().__init__(shape, shape)
        self.register_buffer("mask", m)

    def _forward(self, x):
        return x * self.mask.to(dtype=x.dtype, device=x.device)

    def _adjoint(self, y):
        return y * self.mask.to(dtype=y.dtype, device=y.device)

    def extra_repr(self) -> str:
        return f"image_shape={self.in_shape}, kept={int(self.mask.sum())}/{self.mask.numel()}"


def random_mask(shape: Sequence[int], keep: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A 0/1 float64 mask of ``shape`` keeping each pixel with probability ``keep`` (seeded)."""
    if not 0.0 <= float(keep) <= 1.0:
        raise ValueError(f"keep: expected a probability in [0, 1], got {keep!r}")
    gen = torch.Generator().manual_seed(int(seed))
    return (torch.rand(tuple(int(s) for s in shape), generator=gen, dtype=torch.float64) < keep).double()
