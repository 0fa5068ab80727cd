"""Convolution (blur) with circular or zero boundary, and standard blur kernels.

Convention, for a kernel ``k`` of shape ``(kh, kw)`` with centre ``(ch, cw) = (kh//2, kw//2)``:

    (k * x)[c, i, j] = Σ_{m, n} k[m, n] x[c, i + ch - m, j + cw - n]

per channel, with the index taken modulo ``(H, W)`` (``'circular'``) or ``x`` extended by zeros
(``'zero'``). The output has the input's shape. Both boundaries are computed by FFT:

* circular: ``A x = F⁻¹(K̂ · F x)`` on the ``(H, W)`` grid, ``K̂`` the DFT of ``k`` placed with its
  centre at the origin; ``A^* y = F⁻¹(conj(K̂) · F y)`` (a circular correlation).
* zero: ``A = R C_P Z``, where ``Z`` embeds ``x`` in a ``P x Q`` grid of zeros (top-left corner),
  ``C_P`` is the circular convolution on that grid and ``R = Z^T`` keeps the top-left ``H x W``
  block. With ``P >= max(H + max(ch, kh-1-ch), kh)`` (likewise ``Q``) no wrapped-around term
  reaches the kept block, so ``A`` is exactly the zero-boundary convolution, and
  ``A^* = R C_P^* Z`` is its exact transpose. ``P, Q`` are the next even 5-smooth sizes (fast FFTs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import LinearOperator, as_image_shape

__all__ = ["Blur", "box_kernel", "fast_fft_size", "gaussian_kernel", "make_kernel", "motion_kernel"]

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
    size = 2 * math.ceil((length - 1) / 2) + 3
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


def fast_fft_size(n: int) -> int:
    """The smallest even ``m >= n`` whose only prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = max(2, int(n) + (int(n) % 2))
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 2


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
    image_shape: ``(C, H, W)``, ``(H, W)`` (one channel) or an int ``n`` (``(1, n, n)``).
    kernel: a 2-D tensor/array, or a name in ``KERNEL_NAMES`` (default parameters, see
        :func:`make_kernel`).
    boundary: ``'circular'`` (the kernel must fit in the image) or ``'zero'``.

    ``grid`` is the FFT grid ``(P, Q)``: ``(H, W)`` for the circular boundary, the padded grid of
    the module docstring for the zero boundary.
    """

    def __init__(self, image_shape: int | Sequence[int], kernel="gaussian", boundary: str = "circular"):
        shape = as_image_shape(image_shape)
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
        kh, kw = k.shape
        if boundary == "circular" and (kh > h or kw > w):
            raise ValueError(f"kernel: shape {tuple(k.shape)} larger than the image {(h, w)} "
                             "(circular boundary)")
        super().__init__(shape, shape)
        self.boundary = boundary
        self.register_buffer("kernel", k.clone())
        if boundary == "circular":
            self.grid = (h, w)
        else:
            ch, cw = kh // 2, kw // 2
            self.grid = (fast_fft_size(max(h + max(ch, kh - 1 - ch), kh)),
                         fast_fft_size(max(w + max(cw, kw - 1 - cw), kw)))
        self._multipliers: dict[tuple, torch.Tensor] = {}

    def _multiplier(self, dtype, device) -> torch.Tensor:
        """``rfft2`` of the kernel on the FFT grid ``(P, Q)`` with its centre at the origin, shape
        ``(P, Q//2+1)``."""
        key = (dtype, str(device))
        if key not in self._multipliers:
            p, q = self.grid
            kh, kw = self.kernel.shape
            big = torch.zeros((p, q), dtype=torch.float64, device=self.kernel.device)
            big[:kh, :kw] = self.kernel
            big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._multipliers[key] = torch.fft.rfft2(big.to(dtype)).to(device)
        return self._multipliers[key]

    def _apply(self, fn, recurse=True):  # keep the multiplier cache consistent with .to()/.cuda()
        self._multipliers = {}
        return super()._apply(fn, recurse)

    def _convolve(self, x: torch.Tensor, conj: bool) -> torch.Tensor:
        """``R C_P Z x`` (``conj``: ``R C_P^* Z x``); ``Z``, ``R`` are the identity when the grid
        is the image. ``rfft2(x, s=grid)`` zero-pads at the end of each axis, which is ``Z``; the
        inverse DFT is done axis by axis so that the rows ``R`` drops are removed before the last
        transform, which then has ``H`` rows instead of ``P``."""
        mult = self._multiplier(x.dtype, x.device)
        if conj:
            mult = mult.conj()
        h, w = self.in_shape[1:]
        spectrum = torch.fft.rfft2(x, s=self.grid).mul_(mult)  # in place: one buffer fewer
        if self.grid == (h, w):
            return torch.fft.irfft2(spectrum, s=(h, w))
        kept_rows = torch.fft.ifft(spectrum, dim=-2)[..., :h, :]
        return torch.fft.irfft(kept_rows, n=self.grid[1], dim=-1)[..., :w]

    def _forward(self, x):
        return self._convolve(x, False)

    def _adjoint(self, y):
        return self._convolve(y, True)

    def extra_repr(self) -> str:
        return f"image_shape={self.in_shape}, kernel={tuple(self.kernel.shape)}, boundary={self.boundary!r}"
