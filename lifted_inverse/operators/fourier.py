"""Subsampled 2-D Fourier transform (MRI-style forward model) and k-space sampling masks."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import LinearOperator, as_image_shape
from .mask import binary_mask

__all__ = ["MASK_KINDS", "SubsampledFourier", "sampling_mask"]

MASK_KINDS = ("random", "radial", "cartesian")


class SubsampledFourier(LinearOperator):
    """``A x = P F x`` for real images ``x`` of shape ``(C, H, W)``; output ``(C, M, 2)``.

    ``F`` is the orthonormal 2-D DFT per channel (``torch.fft.fft2(norm='ortho')``), ``P`` keeps
    the ``M`` frequencies where ``mask`` (an ``(H, W)`` 0/1 array in *centred* layout, DC at
    ``(H//2, W//2)`` as in ``fftshift``) is 1, and the complex values are stacked as
    (real, imaginary) in the last axis. For real ``x`` and the real inner product,
    ``A^* y = Re(F^H P^T y)``; ``||A|| <= 1`` (``= 1`` whenever the DC coefficient is kept).
    ``image_shape``: ``(C, H, W)``, ``(H, W)`` (one channel) or an int ``n`` (``(1, n, n)``).
    """

    def __init__(self, image_shape: int | Sequence[int], mask):
        shape = as_image_shape(image_shape)
        m = binary_mask(mask)
        if tuple(m.shape) != shape[1:]:
            raise ValueError(f"mask: expected shape {shape[1:]}, got {tuple(m.shape)}")
        unshifted = torch.fft.ifftshift(m, dim=(0, 1))
        index = torch.nonzero(unshifted.reshape(-1)).reshape(-1)
        if index.numel() == 0:
            raise ValueError("mask: keeps no frequency")
        super().__init__(shape, (shape[0], index.numel(), 2))
        self.register_buffer("mask", m)
        self.register_buffer("index", index)

    def _forward(self, x):
        b, c, h, w = x.shape
        k = torch.fft.fft2(x, norm="ortho").reshape(b, c, h * w)
        kept = k[..., self.index.to(x.device)]
        return torch.view_as_real(kept)

    def _adjoint(self, y):
        b, c, _, _ = y.shape
        h, w = self.in_shape[1:]
        full = torch.zeros((b, c, h * w), dtype=torch.complex128 if y.dtype == torch.float64
                           else torch.complex64, device=y.device)
        full = full.index_copy(-1, self.index.to(y.device), torch.view_as_complex(y.contiguous()))
        return torch.fft.ifft2(full.reshape(b, c, h, w), norm="ortho").real

    def extra_repr(self) -> str:
        return f"image_shape={self.in_shape}, kept={self.out_shape[1]}/{self.in_shape[1] * self.in_shape[2]}"


def sampling_mask(shape: Sequence[int], kind: str = "random", acceleration: float = 4.0,
                  center_fraction: float = 0.08, seed: int = 0) -> torch.Tensor:
    """A 0/1 float64 k-space mask of ``shape = (H, W)`` in centred layout (DC at ``(H//2, W//2)``).

    ``'random'``: each frequency kept with probability ``1/acceleration``; ``'cartesian'``: random
    full columns (phase-encoding lines) at rate ``1/acceleration``; ``'radial'``:
    ``round(max(H, W)/acceleration)`` spokes through the centre at golden-angle-spaced angles
    (rotated by a seeded offset). All kinds keep a fully sampled centre block of
    ``center_fraction`` of each side (at least the DC coefficient).
    """
    h, w = (int(s) for s in shape)
    if kind not in MASK_KINDS:
        raise ValueError(f"kind: expected one of {MASK_KINDS}, got {kind!r}")
    if not (math.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"acceleration: expected a number >= 1, got {acceleration!r}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction: expected a value in [0, 1], got {center_fraction!r}")
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "random":
        m = (torch.rand((h, w), generator=gen, dtype=torch.float64) < 1.0 / acceleration).double()
    elif kind == "cartesian":
        cols = (torch.rand(w, generator=gen, dtype=torch.float64) < 1.0 / acceleration).double()
        m = cols[None, :].expand(h, w).clone()
    else:
        n_spokes = max(1, round(max(h, w) / acceleration))
        offset = float(torch.rand((), generator=gen, dtype=torch.float64)) * math.pi
        ang = offset + torch.arange(n_spokes, dtype=torch.float64) * (math.pi * (math.sqrt(5) - 1) / 2)
        r = torch.linspace(-max(h, w), max(h, w), 4 * max(h, w), dtype=torch.float64)
        rows = torch.round(h // 2 + r[None, :] * torch.sin(ang)[:, None]).long()
        cols = torch.round(w // 2 + r[None, :] * torch.cos(ang)[:, None]).long()
        ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        m = torch.zeros((h, w), dtype=torch.float64)
        m[rows[ok], cols[ok]] = 1.0
    ch, cw = max(1, round(center_fraction * h)), max(1, round(center_fraction * w))
    m[h // 2 - ch // 2: h // 2 - ch // 2 + ch, w // 2 - cw // 2: w // 2 - cw // 2 + cw] = 1.0
    return m
