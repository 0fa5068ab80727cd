"""ASTRA Toolbox geometries equal to ours, for comparisons (``astra`` is optional).

ASTRA's 2-D frame has ``x`` along the columns and ``y`` up (against the rows), so a point at
``(row, col)`` offsets ``(r, c)`` from the rotation centre (length units) is ``(x, y) = (c, -r)``;
``e_θ = (cos θ, sin θ)`` and ``n_θ = (-sin θ, cos θ)`` of :mod:`.geometry` become
``(sin θ, -cos θ)`` and ``(cos θ, sin θ)``. The volume window is placed so that ASTRA's origin is
our rotation centre ``(H//2, W//2)``, and the ``*_vec`` projection geometries give every angle its
source (or ray direction), detector centre and bin vector, ASTRA's bin ``i`` sitting at
``centre + (i - D/2 + 1/2) u`` (ours: ``u_d = (d - D//2) Δu + o``).
"""
from __future__ import annotations

import math

import numpy as np

from .geometry import FanBeamGeometry, ParallelBeamGeometry

__all__ = ["astra_geometries"]


def astra_geometries(geometry: ParallelBeamGeometry | FanBeamGeometry) -> tuple[dict, dict]:
    """``(vol_geom, proj_geom)`` for ``astra`` with the rays of ``geometry`` (``'parallel_vec'``
    or ``'fanflat_vec'``); use e.g. ``astra.create_projector('line_fanflat', proj, vol)``."""
    import astra

    h, w = geometry.image_shape
    p = geometry.pixel_size
    cr, cc = geometry.centre()
    vol = astra.create_vol_geom(h, w, -(cc + 0.5) * p, (w - cc - 0.5) * p,
                                -(h - cr - 0.5) * p, (cr + 0.5) * p)
    n_det, du = geometry.n_detectors, geometry.detector_spacing
    shift = geometry.detector_offset + (n_det / 2 - 0.5 - n_det // 2) * du
    vecs = []
    for th in geometry.angles:
        e = np.array([math.sin(th), -math.cos(th)])
        n = np.array([math.cos(th), math.sin(th)])
        if isinstance(geometry, FanBeamGeometry):
            first = -geometry.source_origin * e                  # the source
            centre = geometry.origin_detector * e + shift * n
        else:
            first, centre = e, shift * n                         # ray direction, detector centre
        vecs.append([*first, *centre, *(du * n)])
    kind = "fanflat_vec" if isinstance(geometry, FanBeamGeometry) else "parallel_vec"
    return vol, astra.create_proj_geom(kind, n_det, np.array(vecs))
