"""Default regularisation parameters from the noise level (no ground truth involved).

Rule: ``alpha = c_method * sigma * s_A`` where ``sigma`` is the (absolute) standard deviation of
the Gaussian measurement noise and ``s_A = ||A||_F / sqrt(n)`` the root-mean-square column norm
of ``A`` (how strongly one pixel is seen by the data; 1 for denoising). At a minimiser,
``A^*(A x - y)`` balances ``alpha`` times a (sub)gradient of the regulariser, and the back-projected
noise ``A^* e`` has per-pixel standard deviation ``sigma s_A``; so ``alpha`` must scale with it.
The constants ``c_method`` were fitted on random-ellipse phantoms (seed 123) for CT and denoising,
never on test images (docs/results.md).
"""
from __future__ import annotations

import math

import torch

from ..operators.base import Identity, LinearOperator

#: c_method of the rule above, for TV (``tv_pdhg``) and gradient-Tikhonov (``tikhonov_cg``).
ALPHA_CONSTANTS = {"tv": 0.7, "tikhonov": 5.0}


@torch.no_grad()
def rms_column_norm(A: LinearOperator, probes: int = 8, seed: int = 0, dtype=torch.float64,
                    device=None) -> float:
    """``||A||_F / sqrt(n)`` by Hutchinson's estimator ``E||A z||^2 = ||A||_F^2`` with
    Rademacher probes ``z`` (seeded). Exact (1.0) for the identity."""
    if isinstance(A, Identity):
        return 1.0
    device, dtype = A._default_device_dtype(device, dtype)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (probes, *A.in_shape), generator=gen).to(dtype) * 2 - 1
    az = A.forward(z.to(device))
    if az.is_complex():
        az = torch.view_as_real(az)
    return math.sqrt(float(az.pow(2).sum()) / (probes * math.prod(A.in_shape)))


def default_alpha(A: LinearOperator, noise_std: float, method: str = "tv") -> float:
    """``alpha = ALPHA_CONSTANTS[method] * noise_std * rms_column_norm(A)`` (see module doc)."""
    if method not in ALPHA_CONSTANTS:
        raise ValueError(f"method: expected one of {sorted(ALPHA_CONSTANTS)}, got {method!r}")
    if not noise_std >= 0 or not math.isfinite(noise_std):
        raise ValueError(f"noise_std: expected a finite value >= 0, got {noise_std!r}")
    return ALPHA_CONSTANTS[method] * float(noise_std) * rms_column_norm(A)
