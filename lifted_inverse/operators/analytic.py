"""Ellipse phantoms and their exact line integrals: an analytic referee for the CT projectors.

An ellipse ``E = (value ρ, semi-axes a, b, centre (c_r, c_c), angle ψ)`` (lengths in the
geometry's unit, centre relative to the rotation centre, ``(row, column)`` components) has the
axes ``a`` along ``(cos ψ, sin ψ)`` and ``b`` along ``(-sin ψ, cos ψ)``. In its normalised frame
``z(x) = (<x - c, (cos ψ, sin ψ)>/a, <x - c, (-sin ψ, cos ψ)>/b)`` the profile of smoothness
``k >= 0`` is

    f_E(x) = ρ (1 - |z(x)|²)^k   inside (|z| < 1),   0 outside

(``k = 0``: the classic constant ellipse; ``k >= 1``: continuous, so point samples and line
integrals of the pixel grid converge at the interpolation order). On the line
``x(t) = q + t e`` (``|e| = 1``), ``z(t) = z_0 + t z'`` is affine, ``|z(t)|² = |z'|² (t - t*)² + m²``
with ``m² = |z_0|² - (z_0·z')²/|z'|²``, and

    ∫ f_E(x(t)) dt = ρ B_k (1 - m²)^{k + 1/2} / |z'|   (m < 1; 0 otherwise),
    B_k = ∫_{-1}^{1} (1 - v²)^k dv = √π Γ(k + 1) / Γ(k + 3/2).

:func:`ellipse_sinogram` evaluates this for every ray of a parallel-beam or fan-beam geometry
(:mod:`.geometry`; parallel ray ``(θ, d)``: ``q = u_d n_θ``, ``e = e_θ``; fan ray ``(β, d)``:
``q = S_β``, ``e`` the unit vector from the source to the bin), so the sinogram of a sum of
ellipses is exact; :func:`ellipse_image` samples the same phantom at the pixel centres.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .geometry import FanBeamGeometry, ParallelBeamGeometry

__all__ = ["Ellipse", "ellipse_image", "ellipse_sinogram", "shepp_logan_ellipses"]

Ellipse = tuple[float, float, float, float, float, float]
"""``(value, a, b, centre_row, centre_col, psi)``: see the module docstring."""

# The modified Shepp-Logan phantom (Toft): (value, a, b, x0, y0, φ in degrees) on [-1, 1]², x to
# the right, y up, the axis a at angle φ from x.
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan_ellipses(radius: float) -> list[Ellipse]:
    """The modified Shepp-Logan ellipses scaled so that ``[-1, 1]²`` maps to a square of half-side
    ``radius`` (length units) about the rotation centre (``y`` up is ``-row``)."""
    out = []
    for value, a, b, x0, y0, phi in _SHEPP_LOGAN:
        # axis a along (x, y) = (cos φ, sin φ), i.e. (row, col) = (-sin φ, cos φ): ψ = φ + π/2
        out.append((value, a * radius, b * radius, -y0 * radius, x0 * radius,
                    math.radians(phi) + math.pi / 2))
    return out


def _check(ellipses: Sequence[Ellipse], smoothness: int) -> list[tuple[float, ...]]:
    if not isinstance(smoothness, int) or isinstance(smoothness, bool) or smoothness < 0:
        raise ValueError(f"smoothness: expected an integer >= 0, got {smoothness!r}")
    out = []
    for e in ellipses:
        vals = tuple(float(v) for v in e)
        if len(vals) != 6 or not all(math.isfinite(v) for v in vals) or min(vals[1], vals[2]) <= 0:
            raise ValueError(f"ellipses: expected (value, a > 0, b > 0, centre_row, centre_col, psi), got {e!r}")
        out.append(vals)
    return out


def ellipse_image(ellipses: Sequence[Ellipse], image_size, pixel_size: float = 1.0,
                  smoothness: int = 0, dtype=torch.float64) -> torch.Tensor:
    """The phantom ``Σ_E f_E`` sampled at the pixel centres of the geometry's grid (centre pixel
    ``(H//2, W//2)``, pitch ``pixel_size``): a tensor ``(1, 1, H, W)``."""
    from .geometry import parse_image_size

    h, w = parse_image_size(image_size)
    rows = ((np.arange(h) - h // 2) * pixel_size)[:, None]
    cols = ((np.arange(w) - w // 2) * pixel_size)[None, :]
    img = np.zeros((h, w))
    for value, a, b, c_r, c_c, psi in _check(ellipses, smoothness):
        dr, dc = rows - c_r, cols - c_c
        z1 = (dr * math.cos(psi) + dc * math.sin(psi)) / a
        z2 = (-dr * math.sin(psi) + dc * math.cos(psi)) / b
        r2 = z1 ** 2 + z2 ** 2
        img += np.where(r2 < 1, value * np.clip(1 - r2, 0, None) ** smoothness, 0.0)
    return torch.as_tensor(img, dtype=dtype)[None, None]


def _rays(geometry) -> tuple[np.ndarray, np.ndarray]:
    """A point ``q`` and unit direction ``e`` of every ray, each ``(A, D, 2)`` (row, col), in
    length units about the rotation centre."""
    th = geometry.angles[:, None]
    u = geometry.detector_positions()[None, :]
    e_th = np.stack(np.broadcast_arrays(np.cos(th), np.sin(th)), axis=-1)      # (A, 1, 2)
    n_th = np.stack(np.broadcast_arrays(-np.sin(th), np.cos(th)), axis=-1)
    if isinstance(geometry, FanBeamGeometry):
        src = -geometry.source_origin * e_th
        v = geometry.source_detector * e_th + u[..., None] * n_th
        q = np.broadcast_to(src, v.shape)
        e = v / np.linalg.norm(v, axis=-1, keepdims=True)
        return q, e
    q = u[..., None] * n_th
    return q, np.broadcast_to(e_th, q.shape)


def ellipse_sinogram(ellipses: Sequence[Ellipse], geometry: ParallelBeamGeometry | FanBeamGeometry,
                     smoothness: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Exact line integrals (module docstring) of ``Σ_E f_E`` along every ray of ``geometry``:
    a tensor ``(1, 1, A, D)``, the analytic counterpart of ``Radon(geometry=geometry)`` applied
    to :func:`ellipse_image`."""
    if not isinstance(geometry, (ParallelBeamGeometry, FanBeamGeometry)):
        raise TypeError(f"geometry: expected a ParallelBeamGeometry or FanBeamGeometry, got {geometry!r}")
    q, e = _rays(geometry)
    out = np.zeros(q.shape[:2])
    b_k = math.sqrt(math.pi) * math.gamma(smoothness + 1) / math.gamma(smoothness + 1.5)
    for value, a, b, c_r, c_c, psi in _check(ellipses, smoothness):
        rot = np.array([[math.cos(psi) / a, math.sin(psi) / a],
                        [-math.sin(psi) / b, math.cos(psi) / b]])
        z0 = (q - np.array([c_r, c_c])) @ rot.T
        dz = e @ rot.T
        dz2 = np.sum(dz ** 2, axis=-1)
        m2 = np.sum(z0 ** 2, axis=-1) - np.sum(z0 * dz, axis=-1) ** 2 / dz2
        inside = np.clip(1 - m2, 0, None)
        out += value * b_k * inside ** (smoothness + 0.5) / np.sqrt(dz2)
    return torch.as_tensor(out, dtype=dtype)[None, None]
