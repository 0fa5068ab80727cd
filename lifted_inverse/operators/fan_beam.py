"""Fan-beam (flat detector) projection rows and filtered backprojection.

Geometry and notation: :mod:`.geometry` (``R_s``, ``R_d``, pixel size ``p``, bin positions ``u_d``,
fan angles ``γ_d = atan(u_d / (R_s + R_d))``).

Projector rows (Joseph's method for arbitrary rays). In pixel-index coordinates ``(row, col)`` the
source of angle ``β`` is ``S = (c_r, c_c) - (R_s/p) e_β`` and ray ``d`` has the direction
``v = ((R_s + R_d)/p) e_β + (u_d/p) n_β``. A ray is row-major when ``|v_r| >= |v_c|``: it is sampled
once on every row ``l`` at the column ``u(l) = S_c + (l - S_r) v_c/v_r`` and the row is linearly
interpolated there (column-major rays: the transposed rule), with the weight
``p |v| / max(|v_r|, |v_c|)`` (the length of the ray between two lines). So

    (R x)[β, d] = Σ_l  w (1 - f_l) x[l, ⌊u(l)⌋] + w f_l x[l, ⌊u(l)⌋ + 1],    f_l = u(l) - ⌊u(l)⌋,

pixels outside the image counting 0: at most ``2 max(H, W)`` entries per ray. :func:`fan_rows`
lists them for a block of angles as indices into the zero-padded image ``(H + 2) x (W + 2)``; the
sparse matrix, the matrix-free forward (gather) and the matrix-free adjoint (scatter of the same
weights) of :class:`~.radon.Radon` are all built from it, so they are one matrix and its transpose.

Filtered backprojection (Kak & Slaney, ch. 3.4.2, equally spaced collinear detectors), with the
detector rescaled to the isocentre (``s_d = u_d R_s/(R_s + R_d)``, pitch ``τ = Δu R_s/(R_s + R_d)``):

    q_β(s) = w(β, γ) cos γ · y_β(s),      Q_β = (h * q_β) / τ    (``h``: the discrete ramp family
                                                                   of :func:`~.sinogram_filter.fbp_filter`)
    f(x) ≈ Δβ Σ_β  (R_s / (R_s + <x, e_β>))²  Q_β( R_s <x, n_β> / (R_s + <x, e_β>) ),

``Q_β`` linearly interpolated. The redundancy weight ``w`` is ``1/2`` for a full scan over ``2π``
(each line is measured twice) and Parker's weight (:func:`parker_weights`) for a short scan over
``[β_0, β_0 + π + 2δ)`` with ``δ >= γ_max``: ``w(β, γ) + w(β + π + 2γ, -γ) = 1`` on every pair of
conjugate rays, so every line counts once.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import FanBeamGeometry
from .sinogram_filter import SinogramFilter

__all__ = ["FanSampling", "fan_entries_estimate", "fan_fbp", "fan_rows", "parker_weights", "scan_weights"]

# Elements of the (B, angles, H*W) sample tensor per backprojection chunk.
_CHUNK_ELEMENTS = 1 << 23


class FanSampling:
    """A fan geometry as the projector samples it: Joseph rows (:func:`fan_rows`) per angle block."""

    model = "joseph"

    def __init__(self, geometry: FanBeamGeometry):
        self.geometry = geometry
        self.h, self.w = geometry.image_shape
        self.angles = geometry.angles
        self.n_det = geometry.n_detectors
        self.n_line = max(self.h, self.w)
        self.key = ("fan", *geometry.key())
        # rays that can meet the image: a chord through it grown by one pixel (the reach of the
        # interpolation taps); from a point source onto a convex box they are one run of bins
        hit = _chords(geometry, margin=1.0)[0] > 0
        first = np.argmax(hit, axis=1)
        last = self.n_det - np.argmax(hit[:, ::-1], axis=1)
        self.hit = np.where(hit.any(axis=1)[:, None], np.stack((first, last), 1), 0)

    def hit_range(self, a0: int, a1: int) -> tuple[int, int]:
        """Bins ``[d0, d1)`` holding every ray of angles ``[a0, a1)`` that meets the image (the
        others are zero rows of ``R``); ``d0 = d1`` when none does."""
        block = self.hit[a0:a1]
        seen = block[:, 1] > block[:, 0]
        if not seen.any():
            return 0, 0
        return int(block[seen, 0].min()), int(block[seen, 1].max())

    def runs(self, entries_per_angle: int, budget: int) -> list[tuple[int, int]]:
        """Angle blocks ``[a0, a1)`` with at most ``budget`` entries each (at least one angle)."""
        step = max(1, budget // max(1, entries_per_angle))
        n = len(self.angles)
        return [(a, min(n, a + step)) for a in range(0, n, step)]


def fan_rows(sampling: FanSampling, a0: int, a1: int, dtype, device, d0: int = 0, d1: int | None = None):
    """Rows of ``R`` for the rays of angles ``[a0, a1)`` and bins ``[d0, d1)`` (module docstring).

    Returns ``(index, weight)``, each of shape ``(c, d1 - d0, L, 2)`` (``c = a1 - a0``,
    ``L = max(H, W)``): tap ``k`` on line ``l`` of ray ``(a, d)`` reads pixel ``index`` (int64) of
    the zero-padded image flattened row-major, ``(H + 2)(W + 2)`` entries, with ``weight``
    (``dtype``). Taps outside the image point into the zero border; lines past the ray's major
    length (non-square images) point to entry 0 with weight 0."""
    geom, h, w, n_line = sampling.geometry, sampling.h, sampling.w, sampling.n_line
    f64, i64 = torch.float64, torch.int64
    p = geom.pixel_size
    cr, cc = geom.centre()
    beta = torch.as_tensor(geom.angles[a0:a1], dtype=f64, device=device)[:, None]
    u = torch.as_tensor(geom.detector_positions()[d0:d1] / p, dtype=f64, device=device)[None, :]
    rs, sd = geom.source_origin / p, geom.source_detector / p
    cb, sb = torch.cos(beta), torch.sin(beta)
    src_r, src_c = cr - rs * cb, cc - rs * sb                                           # (c, 1)
    v_r, v_c = sd * cb - u * sb, sd * sb + u * cb                                       # (c, D)
    row_major = v_r.abs() >= v_c.abs()
    major = torch.where(row_major, v_r, v_c)
    slope = (torch.where(row_major, v_c, v_r) / major)[..., None]
    weight = (p * torch.hypot(v_r, v_c) / major.abs())[..., None]
    # minor position on line l: start + l slope (per ray, affine in l)
    start = (torch.where(row_major, src_c, src_r) - torch.where(row_major, src_r, src_c) * slope[..., 0])
    lines = torch.arange(n_line, dtype=f64, device=device)
    pos = torch.addcmul(start[..., None], lines, slope)                                 # (c, D, L)
    floor = torch.floor(pos)
    frac = pos.sub_(floor)
    tap = floor.to(i64)
    n_minor = torch.where(row_major, w, h).to(i64)[..., None]
    # padded index = line_stride (l + 1) + minor_stride (tap + 1)
    minor_stride = torch.where(row_major, 1, w + 2).to(i64)[..., None]
    line_stride = (w + 3) - minor_stride
    line_part = (torch.arange(1, n_line + 1, dtype=i64, device=device) * line_stride).add_(minor_stride)
    index = torch.empty((*pos.shape, 2), dtype=i64, device=device)
    for k in (0, 1):
        tap_k = torch.minimum(tap.clamp(min=-1), n_minor) if k == 0 else torch.minimum(
            tap.add_(1).clamp_(min=-1), n_minor, out=tap)
        torch.add(line_part, tap_k.mul_(minor_stride), out=index[..., k])
    wts = torch.empty((*pos.shape, 2), dtype=dtype, device=device)
    torch.mul(frac, weight, out=frac)
    torch.sub(weight, frac, out=wts[..., 0])
    wts[..., 1] = frac
    if h != w:  # lines past the ray's major length
        invalid = lines[None, None, :, None] >= torch.where(row_major, h, w)[..., None, None]
        index.masked_fill_(invalid, 0)
        wts.masked_fill_(invalid, 0)
    return index, wts


def _chords(geom: FanBeamGeometry, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Length of every ray's chord through the image rectangle grown by ``margin`` pixels, and
    the rays' unit directions: ``(A, D)`` and ``(A, D, 2)``."""
    p = geom.pixel_size
    h, w = geom.image_shape
    cr, cc = geom.centre()
    lo = np.array([-cr - 0.5 - margin, -cc - 0.5 - margin]) * p
    hi = np.array([h - cr - 0.5 + margin, w - cc - 0.5 + margin]) * p
    beta = geom.angles[:, None]
    u = geom.detector_positions()[None, :]
    e = np.stack(np.broadcast_arrays(np.cos(beta), np.sin(beta)), -1)
    n = np.stack(np.broadcast_arrays(-np.sin(beta), np.cos(beta)), -1)
    src = -geom.source_origin * e
    v = geom.source_detector * e + u[..., None] * n
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - src) / v, (hi - src) / v
    t_in = np.nanmax(np.minimum(t1, t2), axis=-1)
    t_out = np.nanmin(np.maximum(t1, t2), axis=-1)
    return np.clip(t_out - t_in, 0, None), v


def fan_entries_estimate(geom: FanBeamGeometry) -> float:
    """About the number of non-zeros of ``R``: ``Σ_rays 2 (ℓ |v_major|/(p |v|) + 1)`` with ``ℓ``
    the chord of the ray through the image rectangle (one sample per line crossed, two taps)."""
    chord, v = _chords(geom)
    lines = chord * np.abs(v).max(axis=-1) / geom.pixel_size
    return float(np.sum(np.where(chord > 0, 2 * (lines + 1), 0.0)))


# --------------------------------------------------------------------------------------------
# filtered backprojection
# --------------------------------------------------------------------------------------------
def parker_weights(beta: np.ndarray, gamma: np.ndarray, delta: float) -> np.ndarray:
    """Parker's short-scan weights ``w(β, γ)`` of shape ``(len(β), len(γ))`` for ``β`` in
    ``[0, π + 2δ]`` (relative to the first angle), ``δ >= max |γ|``, in this module's convention
    (conjugate of ``(β, γ)``: ``(β + π + 2γ, -γ)``):

        w = sin²(π/4 · β/(δ - γ))                 for 0 <= β <= 2δ - 2γ,
            1                                     for 2δ - 2γ <= β <= π - 2γ,
            sin²(π/4 · (π + 2δ - β)/(δ + γ))      for π - 2γ <= β <= π + 2δ,

    and 0 outside (Kak & Slaney, eq. 3.4.2's short-scan weights); ``w(β, γ) + w(β + π + 2γ, -γ)
    = 1`` (``cos² + sin²``)."""
    b = np.asarray(beta, dtype=np.float64)[:, None]
    g = np.asarray(gamma, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.sin(np.pi / 4 * b / (delta - g)) ** 2
        fall = np.sin(np.pi / 4 * (np.pi + 2 * delta - b) / (delta + g)) ** 2
    out = np.where(b < 2 * delta - 2 * g, rise, np.where(b <= np.pi - 2 * g, 1.0, fall))
    return np.where((b < 0) | (b > np.pi + 2 * delta), 0.0, out)


def _scan_range(geom: FanBeamGeometry) -> tuple[float, float]:
    """``(β_0, span)`` of the scan: ``angle_range`` for uniform angles, else the sorted angles'
    extent plus one mean step."""
    if geom.uniform:
        lo, hi = geom.angle_range
        return lo, hi - lo
    ang = np.sort(geom.angles)
    span = (ang[-1] - ang[0]) * len(ang) / max(len(ang) - 1, 1)
    return float(ang[0]), float(span)


def scan_weights(geom: FanBeamGeometry) -> np.ndarray:
    """Redundancy weights ``w(β_a, γ_d)`` ``(A, D)``: ``1/2`` for a scan over ``2π``, Parker's
    (:func:`parker_weights`, ``δ = (span - π)/2``) for a short scan. ``ValueError`` for a scan
    shorter than ``π + 2γ_max`` (some lines are never measured) or longer than ``2π``."""
    lo, span = _scan_range(geom)
    gamma = geom.fan_angles()
    if span > 2 * math.pi * (1 + 1e-9):
        raise ValueError(f"angles: fan-beam FBP takes a scan over at most 2π, got {span:.4f} rad")
    if span >= 2 * math.pi * (1 - 1e-9):
        return np.full((geom.n_angles, geom.n_detectors), 0.5)
    delta = (span - math.pi) / 2
    if delta < geom.fan_angle() * (1 - 1e-9):
        raise ValueError(f"angles: fan-beam FBP needs a scan over at least π + fan angle "
                         f"({math.pi + 2 * geom.fan_angle():.4f} rad), got {span:.4f} rad")
    beta = np.mod(geom.angles - lo, 2 * math.pi)
    return parker_weights(beta, gamma, delta)


def fan_fbp(sinogram: torch.Tensor, geom: FanBeamGeometry, filter: str = "ramp",
            frequency_scaling: float = 1.0, mask_outside: bool = True) -> torch.Tensor:
    """Fan-beam FBP (module docstring) of ``sinogram`` ``(B, 1, A, D)`` -> ``(B, 1, H, W)``.

    With ``mask_outside`` pixels farther than :meth:`~.geometry.FanBeamGeometry.fov_radius` from the
    rotation centre (not seen from every source position) are set to 0."""
    dtype, device = sinogram.dtype, sinogram.device
    b, n_ang, n_det = sinogram.shape[0], geom.n_angles, geom.n_detectors
    h, w = geom.image_shape
    rs, mag = geom.source_origin, geom.magnification
    tau = geom.detector_spacing / mag
    pre = scan_weights(geom) * np.cos(geom.fan_angles())[None, :]
    q = sinogram * torch.as_tensor(pre, dtype=dtype, device=device)
    filtered = SinogramFilter((1, n_ang, n_det), filter, 1.0, frequency_scaling)(q) / tau
    sino = filtered.reshape(1, b, n_ang, n_det)
    cr, cc = geom.centre()
    rows = (torch.arange(h, dtype=torch.float64, device=device)[:, None] - cr) * geom.pixel_size
    cols = (torch.arange(w, dtype=torch.float64, device=device)[None, :] - cc) * geom.pixel_size
    offset = geom.detector_offset / mag
    out = sinogram.new_zeros((b, h * w))
    step = max(1, _CHUNK_ELEMENTS // max(1, b * h * w))
    for a0 in range(0, n_ang, step):
        a1 = min(n_ang, a0 + step)
        beta = torch.as_tensor(geom.angles[a0:a1], dtype=torch.float64, device=device)[:, None, None]
        cb, sb = torch.cos(beta), torch.sin(beta)
        dist = rs + rows * cb + cols * sb                        # R_s + <x, e_β>, (c, H, W)
        s = rs * (cols * cb - rows * sb) / dist                  # isocentre detector coordinate
        gx = ((s - offset) / tau + n_det // 2) * (2.0 / max(n_det - 1, 1)) - 1.0
        gy = torch.arange(a0, a1, dtype=torch.float64, device=device) * (2.0 / max(n_ang - 1, 1)) - 1.0
        grid = torch.stack((gx, gy[:, None, None].expand_as(gx)), dim=-1)
        grid = grid.reshape(1, a1 - a0, h * w, 2).to(dtype)
        smp = F.grid_sample(sino, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out += (smp[0] * ((rs / dist) ** 2).reshape(1, a1 - a0, h * w).to(dtype)).sum(dim=1)
    rec = (geom.angle_step * out).reshape(b, 1, h, w)
    if mask_outside:
        radius = geom.fov_radius() / geom.pixel_size
        rr = torch.arange(h, device=device)[:, None] - cr
        ccs = torch.arange(w, device=device)[None, :] - cc
        rec = rec * (rr ** 2 + ccs ** 2 <= radius ** 2).to(dtype)
    return rec
