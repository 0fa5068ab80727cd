"""Discrete image gradient (forward differences), the linear part of total variation."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import LinearOperator, as_image_shape


class Gradient(LinearOperator):
    """Forward differences with Neumann boundary: ``(C, H, W) -> (C, 2, H, W)``.

    ``(∇x)[c, 0, i, j] = x[c, i+1, j] - x[c, i, j]`` (0 on the last row),
    ``(∇x)[c, 1, i, j] = x[c, i, j+1] - x[c, i, j]`` (0 on the last column).
    The adjoint is ``∇^* = -div``; ``||∇|| <= sqrt(8)``.
    Isotropic TV ``TV(x) = Σ_{c,i,j} ||(∇x)[c, :, i, j]||_2`` is
    :class:`lifted_inverse.reconstruction.functionals.TotalVariation`.
    ``shape``: ``(C, H, W)``, ``(H, W)`` (one channel) or an int ``n`` (``(1, n, n)``).
    """

    def __init__(self, shape: int | Sequence[int]):
        shape = as_image_shape(shape, "shape")
        c, h, w = shape
        super().__init__(shape, (c, 2, h, w))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dh = torch.zeros_like(x)
        dw = torch.zeros_like(x)
        dh[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
        dw[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
        return torch.stack((dh, dw), dim=2)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        ph, pw = y[:, :, 0], y[:, :, 1]
        out = torch.zeros_like(ph)
        # -div p with the boundary handling that makes it the exact adjoint of _forward
        out[..., :-1, :] -= ph[..., :-1, :]
        out[..., 1:, :] += ph[..., :-1, :]
        out[..., :, :-1] -= pw[..., :, :-1]
        out[..., :, 1:] += pw[..., :, :-1]
        return out

