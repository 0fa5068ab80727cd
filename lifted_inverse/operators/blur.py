"""Convolution (blur) with circular or zero boundary, and standard blur kernels.

Convention, for a kernel ``k`` of shape ``(kh, kw)`` with centre ``(ch, cw) = (kh//2, kw//2)``:

    (k * x)[c, i, j] = Σ_{m, n} k[m, n] x[c, i + ch - m, j + cw - n]

per channel, with the index taken modulo ``(H, W)`` (``'circular'``) or ``x`` extended by zeros
(``'zero'``). The output has the input's shape. Adjoints: circular = multiplication by the
conjugate FFT multiplier (a circular correlation); zero = correlation with ``k`` on the
zero-padded data (the exact transpose of the zero-boundary convolution).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import LinearOperator, check_image_shape

__all__ = ["Blur", "box_kernel", "gaussian_kernel", "make_kernel", "motion_kernel"]

BOUNDARIES = ("circular", "zero")
KERNEL_NAMES = ("gaussian", "box", "motion")


def _pair(v, name: str, kind=float) -> tuple:
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2:
        raise ValueError(f"{name}: expected a number or a pair, got {v!r}")
    return tuple(kind(a) for a in vals)


def gaussian_kernel(size: int | Sequence[int] = 9, sigma: float | Sequence[float] = 1.5,
                    dtype=torch.float64) -> torch.Tensor:
    """``k[m, n] ∝ exp(-(m - ch)²/(2σ_h²) - (n - cw)²/(2σ_w²))`` of shape ``size``, sum 1.

    Centred on the middle of the array (for even sizes between the two middle pixels).
    """
    kh, kw = _pair(size, "size", int)
    sh, sw = _pair(sigma, "sigma")
    if kh < 1 or kw < 1:
        raise ValueError(f"size: expected positive sizes, got {size!r}")
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise ValueError(f"sigma: expected positive finite values, got {sigma!r}")
    m = torch.arange(kh, dtype=torch.float64) - (kh - 1) / 2
    n = torch.arange(kw, dtype=torch.float64) - (kw - 1) / 2
    k = torch.exp(-(m[:, None] ** 2) / (2 * sh ** 2) - (n[None, :] ** 2) / (2 * sw ** 2))
    return (k / k.sum()).to(dtype)


def box_kernel(size: int | Sequence[int] = 5, dtype=torch.float64) -> torch.Tensor:
    """Uniform kernel ``k = 1/(kh kw)`` of shape ``size``."""
    kh, kw = _pair(size, "size", int)
    if kh < 1 or kw < 1:
        raise ValueError(f"size: expected positive sizes, got {size!r}")
    return torch.full((kh, kw), 1.0 / (kh * kw), dtype=dtype)


def motion_kernel(length: float = 9, angle_deg: float = 0.0, dtype=torch.float64) -> torch.Tensor:
    """Linear motion blur: the segment of ``length`` pixels through the centre at ``angle_deg``
    (counter-clockwise from the column axis), rasterised by bilinear splatting of 8 points per
    pixel of length onto an odd square grid; sum 1."""
    if not (math.isfinite(length) and length >= 1):
        raise ValueError(f"length: expected a finite number >= 1, got {length!r}")
    if not math.isfinite(angle_deg):
        raise ValueError(f"angle_deg: expected a finite number, got {angle_deg!r}")
    size = 2 * int(math.ceil((length - 1) / 2)) + 3
    c = size // 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(8 * length)))
    a = math.radians(angle_deg)
    rows, cols = c - t * math.sin(a), c + t * math.cos(a)
    k = np.zeros((size, size))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            np.add.at(k, (r0 + dr, c0 + dc), wr * wc)
    k = k[~np.all(k == 0, axis=1)][:, ~np.all(k == 0, axis=0)]  # crop empty border rows/cols
    return torch.as_tensor(k / k.sum(), dtype=dtype)


def make_kernel(name: str) -> torch.Tensor:
    """Default kernels by name: ``'gaussian'`` (9x9, σ=1.5), ``'box'`` (5x5), ``'motion'`` (9, 0°)."""
    if name == "gaussian":
        return gaussian_kernel(9, 1.5)
    if name == "box":
        return box_kernel(5)
    if name == "motion":
        return motion_kernel(9, 0.0)
    raise ValueError(f"kernel: unknown kernel name {name!r}; expected one of {KERNEL_NAMES} or a 2-D array")


class Blur(LinearOperator):
    """``A x = k * x`` on ``(C, H, W)`` images (see the module docstring for the convention).

    Parameters
    ----------
    image_shape: ``(C, H, W)``.
    kernel: a 2-D tensor/array, or a name in ``KERNEL_NAMES`` (default parameters, see
        :func:`make_kernel`).
    boundary: ``'circular'`` (FFT; the kernel must fit in the image) or ``'zero'``.
    """

    def __init__(self, image_shape: Sequence[int], kernel="gaussian", boundary: str = "circular"):
        shape = check_image_shape(image_shape)
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary: expected one of {BOUNDARIES}, got {boundary!r}")
        if isinstance(kernel, str):
            k = make_kernel(kernel)
        else:
            k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel)
            if k.ndim != 2 or min(k.shape) < 1:
                raise ValueError(f"kernel: expected a non-empty 2-D array, got shape {tuple(k.shape)}")
            if k.is_complex() or not (k.is_floating_point() or k.dtype in (torch.int32, torch.int64)):
                raise ValueError(f"kernel: expected real values, got dtype {k.dtype}")
            k = k.detach().to(torch.float64)
            if not bool(torch.isfinite(k).all()):
                raise ValueError("kernel: contains NaN or Inf values")
        _, h, w = shape
        if boundary == "circular" and (k.shape[0] > h or k.shape[1] > w):
            raise ValueError(f"kernel: shape {tuple(k.shape)} larger than the image {(h, w)} "
                             "(circular boundary)")
        super().__init__(shape, shape)
        self.boundary = boundary
        self.register_buffer("kernel", k.clone())
        self._multipliers: dict[tuple, torch.Tensor] = {}

    def _multiplier(self, dtype, device) -> torch.Tensor:
        """``rfft2`` of the kernel placed with its centre at the origin, shape ``(H, W//2+1)``."""
        key = (dtype, str(device))
        if key not in self._multipliers:
            _, h, w = self.in_shape
            kh, kw = self.kernel.shape
            big = torch.zeros((h, w), dtype=torch.float64, device=self.kernel.device)
            big[:kh, :kw] = self.kernel
            big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._multipliers[key] = torch.fft.rfft2(big.to(dtype)).to(device)
        return self._multipliers[key]

    def _apply(self, fn, recurse=True):  # keep the multiplier cache consistent with .to()/.cuda()
        self._multipliers = {}
        return super()._apply(fn, recurse)

    def _circular(self, x: torch.Tensor, conj: bool) -> torch.Tensor:
        mult = self._multiplier(x.dtype, x.device)
        if conj:
            mult = mult.conj()
        h, w = self.in_shape[1:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * mult, s=(h, w))

    def _zero(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        kh, kw = self.kernel.shape
        ch, cw = kh // 2, kw // 2
        k = self.kernel.to(dtype=x.dtype, device=x.device)
        if adjoint:  # correlation with k: pad (ch, kh-1-ch) rows, (cw, kw-1-cw) columns
            weight, pad = k, (cw, kw - 1 - cw, ch, kh - 1 - ch)
        else:  # convolution = correlation with the flipped kernel
            weight, pad = torch.flip(k, (0, 1)), (kw - 1 - cw, cw, kh - 1 - ch, ch)
        xp = F.pad(x.reshape(b * c, 1, h, w), pad)
        return F.conv2d(xp, weight[None, None]).reshape(b, c, h, w)

    def _forward(self, x):
        return self._circular(x, False) if self.boundary == "circular" else self._zero(x, False)

    def _adjoint(self, y):
        return self._circular(y, True) if self.boundary == "circular" else self._zero(y, True)

    def extra_repr(self) -> str:
        return f"image_shape={self.in_shape}, kernel={tuple(self.kernel.shape)}, boundary={self.boundary!r}"
