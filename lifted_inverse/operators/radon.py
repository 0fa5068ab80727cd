"""2-D CT projectors (parallel and fan beam) with exact adjoints, and filtered backprojection.

:class:`Radon` takes a :class:`~.geometry.ParallelBeamGeometry` or
:class:`~.geometry.FanBeamGeometry` (physical units: pixel size, detector pitch and offset,
source and detector distances); the fan-beam rows and FBP are in :mod:`.fan_beam`. Below, the
parallel beam in pixel units; a pitch ``Δu``, offset ``o`` and pixel size ``p`` put bin ``d`` at
``s_d = ((d - D//2) Δu + o)/p`` pixels and scale every weight by ``p`` (line integrals in length
units).

Parallel geometry (the convention of ``skimage.transform.radon(image, theta, circle=True)``): an
image of shape ``(H, W)`` with unit pixel spacing, rotation centre at pixel index
``(c_r, c_c) = (H//2, W//2)``;
``D`` detector bins with unit spacing, bin ``d`` at signed offset ``s_d = d - D//2`` (default
``D = ceil(hypot(H, W))``, :func:`diagonal_detectors`: the rays cover the whole image;
skimage's ``circle=True`` is ``D = max(H, W)``, the inscribed disc); angle ``θ`` in radians.
The ray of bin ``d`` at angle ``θ`` is

    p(θ, s, t) = (c_r - s sinθ + t cosθ,  c_c + s cosθ + t sinθ)      (row, column),  t ∈ R,

and ``(R x)[θ, d]`` approximates the line integral ``∫ x(p(θ, s_d, t)) dt``. Two discretisations
(``model``), both linear maps with an exact adjoint:

* ``'joseph'`` (default; Joseph 1982): one sample per image line crossed along the ray's major
  axis, linearly interpolated along the minor axis. If ``|cosθ| >= |sinθ|`` rows are major:

      (R x)[θ, d] = w_θ Σ_r x_r(u_θ(r, d)),   u_θ(r, d) = c_c + (r - c_r) tanθ + s_d / cosθ,   w_θ = 1/|cosθ|,

  where ``x_r(u)`` is the linear interpolant of row ``r`` at column ``u`` (0 outside the image);
  otherwise columns are major: ``u_θ(c, d) = c_r + (c - c_c) cotθ - s_d / sinθ``, ``w_θ = 1/|sinθ|``
  and ``x^c(u)`` interpolates column ``c`` at row ``u``. At most 2 non-zeros per (ray, line).
  Positions are rounded to fixed point (``2^-32`` pixel) and the weights computed from those
  integers, so every path below produces bit-identical weights.
* ``'bilinear'``: unit steps ``t ∈ {-K, ..., K}`` of the bilinear interpolant ``x̃`` (4 weights per
  sample), ``(R x)[θ, d] = Σ_t x̃(p(θ, s_d, t))``; this reproduces skimage's sampling on images
  supported in the inscribed disc (Joseph stays within 0.5 % relative L2 of it on a 128x128
  Shepp-Logan phantom, ``tests/test_radon.py``, with half the non-zeros).

Two implementations of the same matrix ``R`` (shape ``(A·D) x (H·W)``), applied to the batch as
columns ``X`` of shape ``(H·W, B)`` (the batch contiguous per pixel):

* ``'sparse'``: ``R`` and ``R^T`` assembled once (vectorised; ``R^T`` by a stable sort of
  ``R``'s entries by column) and cached per geometry as CSR with int32 indices. ``Y = R X`` is the weighted
  gather-sum ``Y[i] = Σ_{k ∈ row i} v_k X[col_k]`` (``torch.nn.functional.embedding_bag``, an SpMM
  kernel, on CUDA and for float32 batches of 8 or more on CPU; otherwise the CSR matrix-vector or
  matrix-matrix product, as ``embedding_bag``'s CPU kernel is slow for one column and float64);
  ``R^T Y`` gathers with the cached ``R^T``: no scatter, no atomics.
* ``'matrix_free'``: for ``'joseph'``, the rows of ``R`` (forward) and of ``R^T`` (adjoint) are
  generated on the fly for chunks of angles and applied by the same gather-sum, so memory is
  ``O(chunk)`` (when bins are finer than pixels, ``Δu < p``, a pixel can meet more than two rays
  of one angle and the adjoint scatters the forward rows instead; so does the fan beam).
  A row of ``R^T`` (pixel ``m`` on line ``l``, angle ``θ``) has at most two rays:
  with ``u_θ(l, d) = a + s_d α`` (``|α| = w_θ >= 1``), ``|u_θ(l, d) - m| < 1`` only for
  ``d ∈ {⌊d*⌋, ⌊d*⌋ + 1}``, ``d* = (m - a)/α + D//2``, found by an exact integer division in the
  fixed-point geometry; its weights are the forward's integers, so the pair is an exact transpose. For
  ``'bilinear'``: rotate-and-sum with ``grid_sample``, whose adjoint scatters the same weights
  (``aten.grid_sampler_2d_backward``).

Both go through :func:`~.linear_function.apply_linear`, whose backward is the other map, so the
vector-Jacobian product of the forward is exactly the adjoint (differentiable to any order, and
``torch.func.vjp`` / ``jvp`` / ``vmap`` work).
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_path
from .base import LinearOperator, check_batch
from .fan_beam import FanSampling, fan_entries_estimate, fan_fbp, fan_rows
from .geometry import (
    FanBeamGeometry,
    ParallelBeamGeometry,
    diagonal_detectors,
    parse_image_size,
    uniform_angles,
)
from .linear_function import apply_linear
from .sinogram_filter import FBP_FILTERS, SinogramFilter, fbp_filter

__all__ = ["FBP_FILTERS", "RADON_MODELS", "FanBeamGeometry", "ParallelBeamGeometry", "Radon",
           "diagonal_detectors", "fbp", "fbp_filter"]

RADON_MODELS = ("joseph", "bilinear")
_METHODS = ("auto", "sparse", "matrix_free")
_SPARSE_LIMIT_BYTES = 1.5e9
# Joseph positions are fixed point with this many fractional bits (2^-32 ≈ 2.3e-10 pixel): integer
# arithmetic makes every path compute bit-identical weights (an exact transpose pair).
_FRAC_BITS = 32
_ONE = 1 << _FRAC_BITS
# Entries per matrix-free Joseph chunk (several float64 temporaries of this length).
_CHUNK_ENTRIES = 1 << 21
# Elements of the (B, angles*T, D) sample tensor per bilinear matrix-free chunk.
_CHUNK_ELEMENTS = 1 << 23
# Smallest float32 batch that the CPU gather-sum hands to embedding_bag (measured crossover with
# the CSR kernels, benchmarks/bench_radon.py --batch-sweep).
_EMBEDDING_BAG_MIN_BATCH = 8

# geometry key -> (R, R^T) as float64 CPU CSR; (geometry key, dtype, device) -> converted copies
_MATRIX_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_CONVERTED_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, tuple(int(s) for s in shape))


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
class _Geometry:
    """A parallel-beam geometry as the projector samples it, in pixel units: detector bin ``d`` at
    ``s_d = (d - D//2) ρ + o`` (``ρ = Δu/p``, ``o`` the offset over ``p``), values scaled by the
    pixel size ``p`` (line integrals in length units)."""

    def __init__(self, geometry: ParallelBeamGeometry, model: str):
        self.h, self.w = geometry.image_shape
        self.angles = angles = geometry.angles
        self.n_det = geometry.n_detectors
        self.model = model
        self.pixel = geometry.pixel_size
        self.rho = geometry.detector_spacing / geometry.pixel_size
        self.offset = geometry.detector_offset / geometry.pixel_size
        self.cr, self.cc = self.h // 2, self.w // 2
        # bilinear: farthest pixel centre from the rotation centre, +1 for the bilinear footprint
        reach = math.hypot(max(self.cr, self.h - 1 - self.cr), max(self.cc, self.w - 1 - self.cc))
        self.k = math.ceil(reach) + 1
        self.n_steps = 2 * self.k + 1
        # joseph: u_θ(l, d) = base + (l - centre) * slope + (d - D//2) * alpha, weight |alpha|
        cos, sin = np.cos(angles), np.sin(angles)
        self.row_major = np.abs(cos) >= np.abs(sin)
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(self.row_major, 1.0 / cos, -1.0 / sin)   # ∂u/∂s
            self.base = np.where(self.row_major, float(self.cc), float(self.cr)) + self.offset * unit
            self.centre = np.where(self.row_major, float(self.cr), float(self.cc))
            self.slope = np.where(self.row_major, sin / cos, cos / sin)
            self.alpha = self.rho * unit
        self.weight = self.pixel * np.abs(unit)
        # fixed point (2^-_FRAC_BITS): u_q(l, d) = line_q[l] + (d - D//2) alpha_q, exact in int64
        self.alpha_q = np.rint(self.alpha * _ONE).astype(np.int64)
        # R^T rows hold at most two rays per (pixel, angle) only while bins are >= 1 pixel apart
        # along each line (|alpha| >= 1); otherwise the matrix-free adjoint scatters instead
        self.two_rays = bool(np.all(np.abs(self.alpha_q) >= _ONE))
        self.key = ("parallel", model, *geometry.key())

    def sample_points(self, angles: torch.Tensor, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear model: (row, col) of every sample, each of shape ``(len(angles), T, D)``."""
        th = angles.to(device=device, dtype=torch.float64)
        cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        t = torch.arange(-self.k, self.k + 1, dtype=torch.float64, device=device)[None, :, None]
        s = ((torch.arange(self.n_det, dtype=torch.float64, device=device) - self.n_det // 2) * self.rho
             + self.offset)[None, None, :]
        row = self.cr - s * sin + t * cos
        col = self.cc + s * cos + t * sin
        return row.to(dtype), col.to(dtype)

    def lines(self, a0: int) -> tuple[int, int]:
        """Joseph: (number of lines along the major axis, length of the minor axis) at angle a0."""
        return (self.h, self.w) if self.row_major[a0] else (self.w, self.h)

    def runs(self, entries_per_angle) -> list[tuple[int, int]]:
        """Angle ranges ``[a0, a1)`` of one major axis each, with at most ``_CHUNK_ENTRIES``
        entries (``entries_per_angle(a0)`` per angle), in angle order."""
        out, n = [], len(self.angles)
        a = 0
        while a < n:
            end = a + 1
            while end < n and self.row_major[end] == self.row_major[a]:
                end += 1
            step = max(1, _CHUNK_ENTRIES // max(1, entries_per_angle(a)))
            out.extend((s, min(end, s + step)) for s in range(a, end, step))
            a = end
        return out

    def fixed_point(self, a0: int, a1: int, device):
        """Joseph geometry of angles ``[a0, a1)`` (one major axis) in fixed point:
        ``line_q`` ``(c, L)`` = ``round(2^F (base + (l - centre) slope))``, ``alpha_q`` ``(c,)``
        = ``round(2^F α)`` (int64) and the weight scale ``w_θ 2^-F`` ``(c,)`` (float64)."""
        n_line = self.lines(a0)[0]
        line = np.arange(n_line, dtype=np.float64)
        sl = slice(a0, a1)
        pos = self.base[sl, None] + (line[None, :] - self.centre[sl, None]) * self.slope[sl, None]
        line_q = torch.as_tensor(np.rint(pos * _ONE).astype(np.int64), device=device)
        alpha_q = torch.as_tensor(self.alpha_q[sl], device=device)
        scale = torch.as_tensor(self.weight[sl] / _ONE, dtype=torch.float64, device=device)
        return line_q, alpha_q, scale


# --------------------------------------------------------------------------------------------
# Joseph rows of R and of R^T (shared by the sparse assembly and the matrix-free path)
# --------------------------------------------------------------------------------------------
def _joseph_rows(geom: _Geometry, a0: int, a1: int, dtype, device):
    """Rows ``a0·D .. a1·D`` of ``R`` (angles ``[a0, a1)`` of one major axis) in a regular layout.

    In fixed point ``U = 2^F u_θ(l, d)`` (int64), ``⌊u⌋ = U >> F`` and ``ϕ = U - 2^F ⌊u⌋ ∈ [0, 2^F)``.
    Returns ``(minor, weight)``, each ``(c, D, 2, L)``: ray ``(a, d)`` holds, for tap ``k ∈ {0, 1}``
    and every line ``l``, the pixel (line ``l``, minor coordinate ``⌊u⌋ + k``) with weight
    ``w_θ 2^-F (2^F - ϕ)`` (tap 0) or ``w_θ 2^-F ϕ`` (tap 1), i.e. ``w_θ (1 - f)`` / ``w_θ f``.
    ``minor`` is clamped to ``[-1, M]`` (``M`` the minor length): ``-1`` and ``M`` are outside.
    """
    line_q, alpha_q, scale = geom.fixed_point(a0, a1, device)
    n_minor, c, n_line = geom.lines(a0)[1], a1 - a0, geom.lines(a0)[0]
    dd = torch.arange(geom.n_det, dtype=torch.int64, device=device) - geom.n_det // 2
    u_q = line_q[:, None, :] + (dd[None, :] * alpha_q[:, None])[:, :, None]              # (c, D, L)
    floor = (u_q >> _FRAC_BITS).to(torch.int32)
    phi = u_q.bitwise_and_(_ONE - 1)
    # written tap by tap into preallocated outputs: stacking / permuting copies cost more here
    taps = torch.empty((c, geom.n_det, 2, n_line), dtype=torch.int32, device=device)
    torch.clamp(floor, -1, n_minor, out=taps[:, :, 0])
    torch.add(floor, 1, out=taps[:, :, 1]).clamp_(-1, n_minor)
    wts = torch.empty((c, geom.n_det, 2, n_line), dtype=dtype, device=device)
    s = scale.to(dtype)[:, None, None]
    torch.mul(_ONE - phi, s, out=wts[:, :, 0])
    torch.mul(phi, s, out=wts[:, :, 1])
    return taps, wts


def _joseph_cols(geom: _Geometry, a0: int, a1: int, dtype, device):
    """The part of ``R^T`` for the rays of angles ``[a0, a1)`` (one major axis), regular layout.

    For pixel (line ``l``, minor ``m``): ``U(d) - 2^F m = e |A| - N`` with ``N = 2^F m - line_q[l]``,
    ``A = alpha_q``, ``e = sign(A)(d - D//2)``. A forward weight is non-zero only for
    ``|U(d) - 2^F m| < 2^F <= |A|``, i.e. ``e ∈ {e0, e0 + 1}``, ``e0 = ⌊N / |A|⌋``, at distances
    ``r = N - e0 |A|`` and ``|A| - r``; the weight is ``w_θ 2^-F max(0, 2^F - distance)`` — the very
    integers the forward uses, so the pair is an exact transpose. Returns ``(ray, weight)``, each
    ``(H, W, c, 2)``, with ``ray = (θ - a0)(D + 2) + d + 1`` (``d`` clamped to ``[-1, D]``): it
    indexes the chunk's sinogram padded with a zero bin on both sides.
    """
    line_q, alpha_q, scale = geom.fixed_point(a0, a1, device)
    n_det, c = geom.n_det, a1 - a0
    if geom.row_major[a0]:   # line = row, minor = column
        line_q = line_q[:, :, None]
        m = torch.arange(geom.w, dtype=torch.int64, device=device)[None, None, :]
    else:                    # line = column, minor = row
        line_q = line_q[:, None, :]
        m = torch.arange(geom.h, dtype=torch.int64, device=device)[None, :, None]
    abs_a = alpha_q.abs()[:, None, None]
    sign = torch.sign(alpha_q)[:, None, None]
    n_q = (m << _FRAC_BITS) - line_q                                                     # (c, H, W)
    e0 = torch.div(n_q, abs_a, rounding_mode="floor")
    r = n_q - e0 * abs_a
    d_pad = sign * e0 + (n_det // 2 + 1)          # + 1: index into the zero-padded sinogram
    local = torch.arange(0, c * (n_det + 2), n_det + 2, dtype=torch.int64, device=device)[:, None, None]
    s = scale.to(dtype)[:, None, None]
    # written into (H, W, c, 2) outputs through (c, H, W, 2) views: no separate permute copies
    ray = torch.empty((*r.shape[1:], c, 2), dtype=torch.int32, device=device)
    wts = torch.empty((*r.shape[1:], c, 2), dtype=dtype, device=device)
    ray_v, wts_v = ray.permute(2, 0, 1, 3), wts.permute(2, 0, 1, 3)
    torch.add((d_pad + sign).clamp_(0, n_det + 1), local, out=ray_v[..., 1])
    torch.add(d_pad.clamp_(0, n_det + 1), local, out=ray_v[..., 0])
    torch.mul((_ONE - r).clamp_(min=0), s, out=wts_v[..., 0])
    torch.mul(r.sub_(abs_a - _ONE).clamp_(min=0), s, out=wts_v[..., 1])
    return ray, wts


def _gather_sum(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
    """``Y = M X`` for the CSR ``M = (crow, col, val)`` and ``X`` of shape ``(n_cols, B)``:
    ``Y[i] = Σ_{crow[i] <= k < crow[i+1]} val[k] X[col[k]]``, shape ``(n_rows, B)``."""
    if col.numel() == 0:
        return x2d.new_zeros((crow.numel() - 1, x2d.shape[1]))
    b = x2d.shape[1]
    if x2d.device.type == "cpu" and (b < _EMBEDDING_BAG_MIN_BATCH or x2d.dtype != torch.float32):
        # embedding_bag's CPU kernel is fast for float32 rows of several columns only; a single
        # column (or float64) goes through the CSR matrix-vector / matrix-matrix kernels instead
        mat = _csr(crow.to(col.dtype), col, val, (crow.numel() - 1, x2d.shape[0]))
        if b == 1:
            return torch.mv(mat, x2d.reshape(-1).contiguous())[:, None]
        return mat @ x2d.contiguous()
    return F.embedding_bag(col, x2d.contiguous(), crow, mode="sum", per_sample_weights=val,
                           include_last_offset=True)


# --------------------------------------------------------------------------------------------
# sparse system matrix
# --------------------------------------------------------------------------------------------
def _build_joseph(geom: _Geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``R`` as CSR arrays ``(crow, col, val)`` (int32, int32, float64), rows in ray order."""
    counts, cols, vals = [], [], []
    for a0, a1 in geom.runs(lambda a: 2 * geom.n_det * geom.lines(a)[0]):
        taps, wts = _joseph_rows(geom, a0, a1, torch.float64, "cpu")
        n_line, n_minor = geom.lines(a0)
        present = (taps >= 0) & (taps < n_minor) & (wts != 0)
        line = torch.arange(n_line, dtype=torch.int32)
        pixel = line * geom.w + taps if geom.row_major[a0] else taps * geom.w + line
        counts.append(present.sum(dim=(2, 3)).reshape(-1))
        cols.append(torch.masked_select(pixel, present))
        vals.append(torch.masked_select(wts, present))
    crow = torch.cat((torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.cat(counts), 0)))
    return crow.to(torch.int32), torch.cat(cols), torch.cat(vals)


def _build_bilinear(geom: _Geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``R`` as CSR arrays for the bilinear model (duplicate (ray, pixel) pairs summed)."""
    h, w, n_det = geom.h, geom.w, geom.n_det
    angles = torch.from_numpy(geom.angles)
    keys, vals = [], []
    block = max(1, int(4e6 // (geom.n_steps * n_det)))
    for a0 in range(0, len(angles), block):
        ang = angles[a0:a0 + block]
        row, col = geom.sample_points(ang, torch.float64, "cpu")
        ray = (torch.arange(a0, a0 + len(ang))[:, None, None] * n_det
               + torch.arange(n_det)[None, None, :]).expand_as(row)
        inside = (row > -1) & (row < h) & (col > -1) & (col < w)
        row, col, ray = row[inside], col[inside], ray[inside]
        r0, c0 = torch.floor(row), torch.floor(col)
        fr, fc = row - r0, col - c0
        r0, c0 = r0.long(), c0.long()
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                rr, cc, wt = r0 + dr, c0 + dc, wr * wc
                keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w) & (wt > 1e-12)
                keys.append(ray[keep] * (h * w) + (rr * w + cc)[keep])
                vals.append(wt[keep])
    key, order = torch.sort(torch.cat(keys))
    uniq, inverse = torch.unique_consecutive(key, return_inverse=True)
    val = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, torch.cat(vals)[order])
    val *= geom.pixel
    rows = uniq // (h * w)
    crow = torch.cat((torch.zeros(1, dtype=torch.int64),
                      torch.cumsum(torch.bincount(rows, minlength=len(angles) * n_det), 0)))
    return crow.to(torch.int32), (uniq % (h * w)).to(torch.int32), val


def _transpose_arrays(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n_cols: int):
    """CSR arrays of ``M^T`` from those of ``M``: a stable sort of the entries by column, so each
    row of ``M^T`` lists its columns in increasing order."""
    n_rows = crow.numel() - 1
    row = torch.repeat_interleave(torch.arange(n_rows, dtype=torch.int32), torch.diff(crow.long()))
    col_sorted, order = torch.sort(col, stable=True)
    counts = torch.bincount(col_sorted.long(), minlength=n_cols)
    crow_t = torch.cat((torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)))
    return crow_t.to(torch.int32), row.index_select(0, order), val.index_select(0, order)


def _build_fan(geom: FanSampling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fan-beam ``R`` as CSR arrays ``(crow, col, val)`` (int32, int32, float64), rows in ray order."""
    counts, cols, vals = [], [], []
    # padded pixel index -> pixel index (-1 on the zero border)
    unpad = torch.full((geom.h + 2, geom.w + 2), -1, dtype=torch.int32)
    unpad[1:-1, 1:-1] = torch.arange(geom.h * geom.w, dtype=torch.int32).reshape(geom.h, geom.w)
    unpad = unpad.reshape(-1)
    for a0, a1 in geom.runs(2 * geom.n_det * geom.n_line, _CHUNK_ENTRIES):
        d0, d1 = geom.hit_range(a0, a1)
        index, wts = fan_rows(geom, a0, a1, torch.float64, "cpu", d0, d1)
        pixel = unpad[index]
        present = (pixel >= 0) & (wts != 0)
        count = torch.zeros((a1 - a0, geom.n_det), dtype=torch.int64)
        count[:, d0:d1] = present.sum(dim=(2, 3))
        counts.append(count.reshape(-1))
        cols.append(torch.masked_select(pixel, present))
        vals.append(torch.masked_select(wts, present))
    crow = torch.cat((torch.zeros(1, dtype=torch.int64), torch.cumsum(torch.cat(counts), 0)))
    return crow.to(torch.int32), torch.cat(cols), torch.cat(vals)


def _build_matrix(geom) -> tuple[torch.Tensor, torch.Tensor]:
    """``R`` (float64 CSR, ``(A*D, H*W)``, int32 indices) and its transpose."""
    n_rows, n_cols = len(geom.angles) * geom.n_det, geom.h * geom.w
    if isinstance(geom, FanSampling):
        arrays = _build_fan(geom)
    else:
        arrays = _build_joseph(geom) if geom.model == "joseph" else _build_bilinear(geom)
    arrays_t = _transpose_arrays(*arrays, n_cols)
    if geom.model == "joseph" and not isinstance(geom, FanSampling):
        # sort each row of R by column too (parallel Joseph rows list them by tap, line)
        arrays = _transpose_arrays(*arrays_t, n_rows)
    mat = _csr(*arrays, (n_rows, n_cols))
    mat_t = _csr(*arrays_t, (n_cols, n_rows))
    return mat, mat_t


def _cache_file(geom) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lifted_inverse"
    tag = hashlib.sha1(repr(geom.key).encode()).hexdigest()[:16]
    kind = "fan" if isinstance(geom, FanSampling) else geom.model
    return root / f"radon_{kind}_{geom.h}x{geom.w}_{len(geom.angles)}x{geom.n_det}_{tag}.npz"


def _csr_to_arrays(prefix: str, m: torch.Tensor) -> dict[str, np.ndarray]:
    return {f"{prefix}_crow": m.crow_indices().numpy(), f"{prefix}_col": m.col_indices().numpy(),
            f"{prefix}_val": m.values().numpy(), f"{prefix}_shape": np.array(m.shape)}


def _csr_from_arrays(prefix: str, z) -> torch.Tensor:
    return _csr(torch.from_numpy(z[f"{prefix}_crow"]), torch.from_numpy(z[f"{prefix}_col"]),
                torch.from_numpy(z[f"{prefix}_val"]), z[f"{prefix}_shape"])


def _system_matrix(geom, dtype, device, disk_cache: bool):
    """Cached ``(R, R^T)`` as CSR in ``dtype`` on ``device``."""
    ckey = (geom.key, dtype, str(device))
    if ckey in _CONVERTED_CACHE:
        return _CONVERTED_CACHE[ckey]
    if geom.key not in _MATRIX_CACHE:
        path = _cache_file(geom) if disk_cache else None
        if path is not None and path.exists():
            with np.load(path) as z:
                _MATRIX_CACHE[geom.key] = (_csr_from_arrays("r", z), _csr_from_arrays("rt", z))
        else:
            _MATRIX_CACHE[geom.key] = _build_matrix(geom)
            if path is not None:
                mat, mat_t = _MATRIX_CACHE[geom.key]
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **_csr_to_arrays("r", mat), **_csr_to_arrays("rt", mat_t))
    pair = tuple(_csr(m.crow_indices().to(device), m.col_indices().to(device),
                      m.values().to(device=device, dtype=dtype), m.shape)
                 for m in _MATRIX_CACHE[geom.key])
    _CONVERTED_CACHE[ckey] = pair
    return pair


def clear_cache() -> None:
    """Drop all in-memory system matrices."""
    _MATRIX_CACHE.clear()
    _CONVERTED_CACHE.clear()


class _SparseMap:
    """``R`` and ``R^T`` on batches by the cached CSR pair (a linear map object of
    :mod:`.linear_function`): ``(B, 1, H, W) <-> (B, 1, A, D)``. The pair is fetched when applied,
    inside the autograd Function, where no ``torch.func`` transform wraps the sparse tensors."""

    def __init__(self, radon: Radon):
        self.radon = radon
        self.in_shape, self.out_shape = radon.in_shape, radon.out_shape

    def _mats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.radon
        return _system_matrix(r._sampling, like.dtype, like.device, r.disk_cache)

    @staticmethod
    def _apply(mat: torch.Tensor, x: torch.Tensor, shape) -> torch.Tensor:
        b = x.shape[0]
        y = _gather_sum(mat.crow_indices(), mat.col_indices(), mat.values(), x.reshape(b, -1).T)
        return y.T.reshape(b, *shape).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self._mats(x)[0], x, self.out_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(self._mats(y)[1], y, self.in_shape)


# --------------------------------------------------------------------------------------------
# matrix-free paths
# --------------------------------------------------------------------------------------------
def _joseph_mf_forward(x: torch.Tensor, geom: _Geometry) -> torch.Tensor:
    """``R x`` for ``x`` ``(B, 1, H, W)`` -> ``(A*D, B)``, rows of ``R`` generated per chunk.

    The image is gathered from a copy ``S`` of shape ``(M + 2, L, B)`` per major axis
    (``S[t + 1, l] = x`` at line ``l``, minor coordinate ``t``; zero rows at ``t = -1, M``), so the
    entries of a ray are nearly consecutive in memory and taps outside the image read zeros."""
    b, n_det = x.shape[0], geom.n_det
    img = x.reshape(b, geom.h, geom.w)
    out = x.new_empty((len(geom.angles) * n_det, b))
    stores = {}
    for a0, a1 in geom.runs(lambda a: 2 * n_det * geom.lines(a)[0]):
        n_line, n_minor = geom.lines(a0)
        major = bool(geom.row_major[a0])
        if major not in stores:
            store = x.new_zeros((n_minor + 2, n_line, b))
            store[1:-1] = img.permute(2, 1, 0) if major else img.permute(1, 2, 0)
            stores[major] = store.reshape(-1, b)
        taps, wts = _joseph_rows(geom, a0, a1, x.dtype, x.device)
        line = torch.arange(n_line, n_line * 2, dtype=torch.int32, device=x.device)
        idx = taps.mul_(n_line).add_(line)                     # (t + 1) L + l
        per_ray = 2 * n_line
        offsets = torch.arange(0, (a1 - a0) * n_det * per_ray + 1, per_ray, dtype=torch.int32,
                               device=x.device)
        out[a0 * n_det:a1 * n_det] = _gather_sum(offsets, idx.reshape(-1), wts.reshape(-1), stores[major])
    return out


def _joseph_mf_adjoint(y: torch.Tensor, geom: _Geometry) -> torch.Tensor:
    """``R^T y`` for ``y`` ``(B, 1, A, D)`` -> ``(H*W, B)``, rows of ``R^T`` generated per chunk
    and gathered from the sinogram padded with a zero bin on both sides, ``(A, D + 2, B)``."""
    b, n_ang, n_det, n_pix = y.shape[0], len(geom.angles), geom.n_det, geom.h * geom.w
    sino = y.new_zeros((n_ang, n_det + 2, b))
    sino[:, 1:-1] = y.reshape(b, n_ang, n_det).permute(1, 2, 0)
    sino = sino.reshape(-1, b)
    out = y.new_zeros((n_pix, b))
    for a0, a1 in geom.runs(lambda a: 2 * n_pix):
        ray, wts = _joseph_cols(geom, a0, a1, y.dtype, y.device)
        per_pixel = 2 * (a1 - a0)
        offsets = torch.arange(0, n_pix * per_pixel + 1, per_pixel, dtype=torch.int32, device=y.device)
        out += _gather_sum(offsets, ray.reshape(-1), wts.reshape(-1), sino[a0 * (n_det + 2):a1 * (n_det + 2)])
    return out


def _grid(geom: _Geometry, angles: torch.Tensor, dtype, device) -> torch.Tensor:
    """Bilinear model: grid_sample grid (align_corners=True) of shape ``(1, len(angles)*T, D, 2)``."""
    row, col = geom.sample_points(angles, torch.float64, device)
    gx = col * (2.0 / (geom.w - 1)) - 1.0
    gy = row * (2.0 / (geom.h - 1)) - 1.0
    return torch.stack((gx, gy), dim=-1).reshape(1, -1, geom.n_det, 2).to(dtype)


def _chunks(geom: _Geometry, batch: int):
    per_angle = max(1, batch * geom.n_steps * geom.n_det)
    step = max(1, _CHUNK_ELEMENTS // per_angle)
    n = len(geom.angles)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _bilinear_mf_forward(x: torch.Tensor, geom: _Geometry, angles: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    img = x.reshape(1, b, geom.h, geom.w)  # batch as channels: one grid serves all samples
    out = []
    for a0, a1 in _chunks(geom, b):
        g = _grid(geom, angles[a0:a1], x.dtype, x.device)
        smp = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(smp.reshape(b, a1 - a0, geom.n_steps, geom.n_det).sum(dim=2))
    return geom.pixel * torch.cat(out, dim=1).reshape(b, 1, len(angles), geom.n_det)


def _bilinear_mf_adjoint(y: torch.Tensor, geom: _Geometry, angles: torch.Tensor) -> torch.Tensor:
    b = y.shape[0]
    sino = y.reshape(b, len(angles), geom.n_det)
    zero_img = y.new_zeros((1, b, geom.h, geom.w))
    out = y.new_zeros((1, b, geom.h, geom.w))
    for a0, a1 in _chunks(geom, b):
        g = _grid(geom, angles[a0:a1], y.dtype, y.device)
        grad_out = sino[:, a0:a1, None, :].expand(b, a1 - a0, geom.n_steps, geom.n_det)
        grad_out = grad_out.reshape(1, b, -1, geom.n_det).contiguous()
        # the input-gradient of bilinear grid_sample: the same weights, scattered (exact transpose)
        gin, _ = torch.ops.aten.grid_sampler_2d_backward(grad_out, zero_img, g, 0, 0, True, [True, False])
        out += gin
    return geom.pixel * out.reshape(b, 1, geom.h, geom.w)


def _joseph_scatter_adjoint(y: torch.Tensor, geom: _Geometry) -> torch.Tensor:
    """``R^T y`` -> ``(H*W, B)`` by scattering (``index_add_``) the weighted rays onto the pixels
    their rows of ``R`` (:func:`_joseph_rows`) name: the exact transpose for any detector pitch
    (used when a pixel meets more than two rays of one angle, ``ρ < 1``)."""
    b, n_det = y.shape[0], geom.n_det
    sino = y.reshape(b, -1).T.contiguous()
    stores = {}
    for a0, a1 in geom.runs(lambda a: 2 * n_det * geom.lines(a)[0] * max(1, b)):
        n_line, n_minor = geom.lines(a0)
        major = bool(geom.row_major[a0])
        if major not in stores:
            stores[major] = y.new_zeros(((n_minor + 2) * n_line, b))
        taps, wts = _joseph_rows(geom, a0, a1, y.dtype, y.device)
        line = torch.arange(n_line, n_line * 2, dtype=torch.int32, device=y.device)
        idx = taps.mul_(n_line).add_(line).reshape(-1).long()
        vals = wts.reshape((a1 - a0) * n_det, -1, 1) * sino[a0 * n_det:a1 * n_det, None, :]
        stores[major].index_add_(0, idx, vals.reshape(-1, b))
    out = y.new_zeros((geom.h, geom.w, b))
    for major, store in stores.items():
        n_line, n_minor = (geom.h, geom.w) if major else (geom.w, geom.h)
        inner = store.reshape(n_minor + 2, n_line, b)[1:-1]
        out += inner.permute(1, 0, 2) if major else inner
    return out.reshape(-1, b)


def _fan_mf_forward(x: torch.Tensor, geom: FanSampling) -> torch.Tensor:
    """Fan-beam ``R x`` -> ``(A*D, B)``: rows of :func:`~.fan_beam.fan_rows` per angle block,
    gathered from the zero-padded image ``(H + 2)(W + 2) x B``."""
    b, n_det = x.shape[0], geom.n_det
    store = x.new_zeros((geom.h + 2, geom.w + 2, b))
    store[1:-1, 1:-1] = x.reshape(b, geom.h, geom.w).permute(1, 2, 0)
    store = store.reshape(-1, b)
    out = x.new_zeros((len(geom.angles), n_det, b))
    per_ray = 2 * geom.n_line
    for a0, a1 in geom.runs(per_ray * n_det, _CHUNK_ENTRIES):
        d0, d1 = geom.hit_range(a0, a1)  # the other rays miss the image: zero
        if d1 <= d0:
            continue
        index, wts = fan_rows(geom, a0, a1, x.dtype, x.device, d0, d1)
        offsets = torch.arange(0, (a1 - a0) * (d1 - d0) * per_ray + 1, per_ray, dtype=index.dtype,
                               device=x.device)
        rays = _gather_sum(offsets, index.reshape(-1), wts.reshape(-1), store)
        out[a0:a1, d0:d1] = rays.reshape(a1 - a0, d1 - d0, b)
    return out.reshape(-1, b)


def _fan_mf_adjoint(y: torch.Tensor, geom: FanSampling) -> torch.Tensor:
    """Fan-beam ``R^T y`` -> ``(H*W, B)``: the weights of :func:`~.fan_beam.fan_rows` scattered
    (``index_add_``) onto the zero-padded image, which is then cropped (the exact transpose)."""
    b, n_det = y.shape[0], geom.n_det
    sino = y.reshape(b, len(geom.angles), n_det)
    out = y.new_zeros((b, (geom.h + 2) * (geom.w + 2)))
    for a0, a1 in geom.runs(2 * geom.n_line * n_det, _CHUNK_ENTRIES):
        d0, d1 = geom.hit_range(a0, a1)
        if d1 <= d0:
            continue
        index, wts = fan_rows(geom, a0, a1, y.dtype, y.device, d0, d1)
        index, wts = index.reshape(-1), wts.reshape((a1 - a0) * (d1 - d0), -1)
        # one 1-D scatter per sample: index_add_ of rows of B values is several times slower
        for k in range(b):
            rays = sino[k, a0:a1, d0:d1].reshape(-1, 1)
            out[k].index_add_(0, index, (wts * rays).reshape(-1))
    return out.reshape(b, geom.h + 2, geom.w + 2)[:, 1:-1, 1:-1].reshape(b, -1).T


def _mf_forward(x: torch.Tensor, geom, angles: torch.Tensor) -> torch.Tensor:
    if isinstance(geom, FanSampling):
        y2d = _fan_mf_forward(x, geom)
    elif geom.model == "bilinear":
        return _bilinear_mf_forward(x, geom, angles)
    else:
        y2d = _joseph_mf_forward(x, geom)
    return y2d.T.reshape(x.shape[0], 1, len(angles), geom.n_det).contiguous()


def _mf_adjoint(y: torch.Tensor, geom, angles: torch.Tensor) -> torch.Tensor:
    if isinstance(geom, FanSampling):
        x2d = _fan_mf_adjoint(y, geom)
    elif geom.model == "bilinear":
        return _bilinear_mf_adjoint(y, geom, angles)
    elif geom.two_rays:
        x2d = _joseph_mf_adjoint(y, geom)
    else:
        x2d = _joseph_scatter_adjoint(y, geom)
    return x2d.T.reshape(y.shape[0], 1, geom.h, geom.w).contiguous()


class _MatrixFreeMap:
    """``R`` and ``R^T`` generated on the fly (a linear map object of :mod:`.linear_function`)."""

    def __init__(self, geom, angles: torch.Tensor):
        self.geom, self.angles = geom, angles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mf_forward(x, self.geom, self.angles)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return _mf_adjoint(y, self.geom, self.angles)


def _interp_backproject(q: torch.Tensor, geom: _Geometry, angles: torch.Tensor) -> torch.Tensor:
    """``(B q)[r, c] = Σ_θ q_θ(s)`` with ``s = (c - c_c) cosθ - (r - c_r) sinθ`` (pixel units),
    linearly interpolated between the bins at ``s_d = (d - D//2) ρ + o``."""
    b, n_ang = q.shape[0], len(angles)
    sino = q.reshape(1, b, n_ang, geom.n_det)
    rows = torch.arange(geom.h, dtype=torch.float64, device=q.device)[:, None] - geom.cr
    cols = torch.arange(geom.w, dtype=torch.float64, device=q.device)[None, :] - geom.cc
    out = q.new_zeros((b, geom.h * geom.w))
    step = max(1, _CHUNK_ELEMENTS // max(1, b * geom.h * geom.w))
    for a0 in range(0, n_ang, step):
        a1 = min(n_ang, a0 + step)
        th = angles[a0:a1].to(device=q.device, dtype=torch.float64)[:, None, None]
        s = (cols * torch.cos(th) - rows * torch.sin(th) - geom.offset) / geom.rho + geom.n_det // 2
        gx = s * (2.0 / max(geom.n_det - 1, 1)) - 1.0
        gy = (torch.arange(a0, a1, dtype=torch.float64, device=q.device) * (2.0 / max(n_ang - 1, 1)) - 1.0)
        gy = gy[:, None, None].expand_as(gx)
        grid = torch.stack((gx, gy), dim=-1).reshape(1, a1 - a0, geom.h * geom.w, 2).to(q.dtype)
        smp = torch.nn.functional.grid_sample(sino, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=True)
        out += smp[0].sum(dim=1)
    return out.reshape(b, 1, geom.h, geom.w)




# --------------------------------------------------------------------------------------------
# the operator
# --------------------------------------------------------------------------------------------
class Radon(LinearOperator):
    """The CT projector ``R: (1, H, W) -> (1, A, D)`` of a parallel- or fan-beam geometry.

    ``Radon(geometry=g)`` with a :class:`~.geometry.ParallelBeamGeometry` or
    :class:`~.geometry.FanBeamGeometry` ``g``; without ``geometry`` the other arguments are the
    parallel-beam shorthand ``ParallelBeamGeometry(image_size, n_angles, n_detectors,
    angles=angles, angle_range=angle_range)`` (unit pixels and bins; see the module docstring).

    Parameters
    ----------
    image_size: ``N`` (square) or ``(H, W)``, each >= 2 (optional with ``geometry``).
    n_angles: number of angles ``A`` [60, :data:`~.geometry.DEFAULT_N_ANGLES`], uniform in ``angle_range`` (end point excluded).
    angles: explicit angles in radians (overrides ``n_angles`` and ``angle_range``).
    n_detectors: ``D``; default :func:`diagonal_detectors` ``= ceil(hypot(H, W))``: the rays
        cover the whole image, not only its inscribed disc (photographs fill the square).
    angle_range: ``(lo, hi)`` in radians [``(0, π)``]; ``(0, 2*pi/3)`` gives a limited-angle problem.
    method: ``'sparse'`` (cached CSR matrices ``R``, ``R^T``), ``'matrix_free'`` or ``'auto'``
        (sparse when both float64 CSR matrices would take less than 1.5 GB: up to about 256x256
        with 180 angles for ``'joseph'``).
    disk_cache: also keep the sparse matrix under ``$XDG_CACHE_HOME/lifted_inverse`` (written
        atomically), so later processes skip the assembly.
    model: ``'joseph'`` (default: 2 interpolation weights per line crossed) or ``'bilinear'``
        (parallel beam only: unit steps of bilinear interpolation, skimage's sampling; about
        twice the work).
    geometry: the acquisition geometry (then ``n_angles``, ``angles``, ``n_detectors`` and
        ``angle_range`` must be left unset).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] | None = None,
        n_angles: int | None = None,
        angles=None,
        n_detectors: int | None = None,
        angle_range: Sequence[float] | None = None,
        method: str = "auto",
        disk_cache: bool = False,
        model: str = "joseph",
        geometry: ParallelBeamGeometry | FanBeamGeometry | None = None,
    ):
        if geometry is None:
            if image_size is None:
                raise ValueError("image_size: required unless a geometry is given")
            geometry = ParallelBeamGeometry(image_size, n_angles, n_detectors, angles=angles,
                                            angle_range=(0.0, math.pi) if angle_range is None
                                            else angle_range)
        else:
            if not isinstance(geometry, (ParallelBeamGeometry, FanBeamGeometry)):
                raise ValueError("geometry: expected a ParallelBeamGeometry or FanBeamGeometry, "
                                 f"got {type(geometry).__name__}")
            for name, value in (("n_angles", n_angles), ("angles", angles),
                                ("n_detectors", n_detectors), ("angle_range", angle_range)):
                if value is not None:
                    raise ValueError(f"{name}: part of the geometry; do not pass it with geometry=")
            if image_size is not None and parse_image_size(image_size) != geometry.image_shape:
                raise ValueError(f"image_size: {image_size!r} differs from the geometry's "
                                 f"{geometry.image_shape}")
        if method not in _METHODS:
            raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
        if model not in RADON_MODELS:
            raise ValueError(f"model: expected one of {RADON_MODELS}, got {model!r}")
        if geometry.kind == "fan" and model != "joseph":
            raise ValueError(f"model: the fan-beam projector is 'joseph' only, got {model!r}")
        shape = geometry.image_shape
        super().__init__((1, *shape), (1, geometry.n_angles, geometry.n_detectors))
        self.geometry = geometry
        self.image_shape = shape
        self.n_angles = geometry.n_angles
        self.n_detectors = geometry.n_detectors
        self.angles = geometry.angles
        self.uniform = geometry.uniform
        if geometry.uniform:
            self.angle_range = geometry.angle_range
        self._angles_t = torch.from_numpy(geometry.angles)
        self.model = model
        self._sampling = FanSampling(geometry) if geometry.kind == "fan" else _Geometry(geometry, model)
        self.disk_cache = bool(disk_cache)
        self.method = self._resolve_method(method)

    def _resolve_method(self, method: str) -> str:
        if method != "auto":
            return method
        return "sparse" if self.sparse_bytes_estimate() < _SPARSE_LIMIT_BYTES else "matrix_free"

    def sparse_bytes_estimate(self) -> float:
        """Estimate of the bytes of ``R`` and ``R^T`` in float64 CSR (int32 indices): parallel
        Joseph stores at most 2 weights per (ray, line), bilinear about 3 per (ray, step); fan beam
        2 per line each ray crosses (:func:`~.fan_beam.fan_entries_estimate`)."""
        if self.geometry.kind == "fan":
            return 2 * fan_entries_estimate(self.geometry) * (8 + 4)
        h, w = self.image_shape
        per_ray = (2 * max(h, w) if self.model == "joseph" else 3 * self._sampling.n_steps)
        return 2 * per_ray * self.n_angles * self.n_detectors * (8 + 4)

    @property
    def angle_step(self) -> float:
        """Quadrature weight ``Δθ`` per angle (:attr:`~.geometry.ParallelBeamGeometry.angle_step`)."""
        return self.geometry.angle_step

    def matrix(self, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """The cached CSR system matrix ``R`` of shape ``(A*D, H*W)`` (int32 indices)."""
        return _system_matrix(self._sampling, dtype, torch.device(device), self.disk_cache)[0]

    def _linear_map(self):
        if self.method == "sparse":
            return _SparseMap(self)
        return _MatrixFreeMap(self._sampling, self._angles_t)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_linear(x, self._linear_map())

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return apply_linear(y, self._linear_map(), adjoint=True)

    def fbp(self, sinogram: torch.Tensor, filter: str = "ramp", frequency_scaling: float = 1.0,
            backprojector: str = "interpolation", mask_outside: bool = True) -> torch.Tensor:
        """Filtered backprojection of ``sinogram`` ``(B, 1, A, D)`` -> ``(B, 1, H, W)``.

        Fan beam: :func:`~.fan_beam.fan_fbp` (cosine pre-weighting, redundancy / Parker weights,
        the filter below, distance-weighted backprojection; ``backprojector`` must be
        ``'interpolation'``). Parallel beam: ``x ≈ (Δθ/Δu) · B (h * y)``, where
        ``h`` is the band-limited ramp ``|ν|`` (built from its exact discrete kernel, so there is
        no DC offset) times the window ``filter``, applied along the detector after zero padding
        to a power of two >= 2D; ``Δθ`` is :attr:`angle_step` and ``Δu`` the detector pitch. The
        backprojector ``B`` is
        ``'interpolation'`` (default: ``(B q)(p) = Σ_θ q_θ(s(p, θ))`` with ``q_θ`` linearly
        interpolated at ``s = (col - c_c) cosθ - (row - c_r) sinθ``, the classical FBP
        backprojector, as skimage's ``iradon``) or ``'adjoint'`` (``R^T / p``, which also spreads
        the interpolation weights of the projector; comparison in docs/results.md).
        With ``mask_outside`` pixels farther than the geometry's ``fov_radius()`` from the
        rotation centre (not seen by every angle; skimage's ``circle=True`` disc) are set to 0.
        """
        check_batch(sinogram, self.out_shape, "sinogram")
        if backprojector not in ("interpolation", "adjoint"):
            raise ValueError(f"backprojector: expected 'interpolation' or 'adjoint', got {backprojector!r}")
        g = self.geometry
        if g.kind == "fan":
            if backprojector != "interpolation":
                raise ValueError("backprojector: fan-beam FBP backprojects by interpolation only")
            return fan_fbp(sinogram, g, filter, frequency_scaling, mask_outside)
        filtered = SinogramFilter(self.out_shape, filter, 1.0, frequency_scaling)(sinogram)
        scale = self.angle_step / g.detector_spacing
        if backprojector == "adjoint":
            rec = (scale / g.pixel_size) * self.adjoint(filtered)
        else:
            rec = scale * _interp_backproject(filtered, self._sampling, self._angles_t)
        if mask_outside:
            cr, cc = g.centre()
            rr = torch.arange(g.image_shape[0], device=rec.device)[:, None] - cr
            cols = torch.arange(g.image_shape[1], device=rec.device)[None, :] - cc
            radius = g.fov_radius() / g.pixel_size
            rec = rec * (rr ** 2 + cols ** 2 <= radius ** 2).to(rec.dtype)
        return rec

    def extra_repr(self) -> str:
        return (f"geometry={self.geometry!r}, method={self.method!r}, model={self.model!r}")


def fbp(radon: Radon, sinogram: torch.Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> torch.Tensor:
    """Filtered backprojection with ``radon``'s geometry: see :meth:`Radon.fbp`."""
    if not isinstance(radon, Radon):
        raise TypeError(f"radon: expected a Radon operator, got {type(radon).__name__}")
    return radon.fbp(sinogram, filter=filter, frequency_scaling=frequency_scaling)


# kept under their former names for callers of this module
_parse_image_size = parse_image_size
_uniform_angles = uniform_angles
