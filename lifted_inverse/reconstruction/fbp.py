"""Filtered back-projection: the one entry point, for parallel- and fan-beam CT.

The algorithm follows the operator's geometry (``radon.geometry.kind``), through ``Radon.fbp``:
parallel beam ``x = (Δθ/Δu) B(h * y)``; fan beam (flat detector) cosine pre-weighting, redundancy
weights (``1/2`` over ``2π``, Parker's for a short scan over at least ``π`` + the fan angle), the
filter along the detector and the distance-weighted backprojection
(:mod:`lifted_inverse.operators.fan_beam`).
"""
from __future__ import annotations

import torch

from ..operators.base import LinearOperator, check_batch, check_finite


def fbp(radon: LinearOperator, y: torch.Tensor, filter: str = "ramp",
        frequency_scaling: float = 1.0) -> torch.Tensor:
    """The filtered back-projection of sinograms ``y`` ``(B, 1, A, D)`` -> ``(B, 1, H, W)`` in the
    geometry of ``radon`` (a ``Radon``, parallel or fan beam), with ``filter`` in
    ``FBP_FILTERS`` (``'ramp'``, ``'shepp-logan'``, ``'hann'``, ``'cosine'``) applied along the
    detector axis and cut off at ``frequency_scaling`` times Nyquist (see ``Radon.fbp``)."""
    if not hasattr(radon, "fbp"):
        raise TypeError(f"radon: FBP needs a Radon operator, got {type(radon).__name__}; "
                        "use tikhonov_cg or tv_pdhg for other operators")
    check_batch(y, radon.out_shape, "y")
    check_finite(y, "y")
    return radon.fbp(y, filter=filter, frequency_scaling=frequency_scaling)
