"""The power iteration shared by operators, the lifted engine and networks.

For a symmetric positive semi-definite linear map ``M`` (``apply(v) = M v``, e.g. ``A^*A`` for an
operator norm ``‖A‖² = λ_max(A^*A)``) and a start ``v_0`` with a component along the top
eigenvector, the iteration

    v_k = w_{k-1} / ‖w_{k-1}‖,   w_k = M v_k,   λ_k = ⟨v_k, w_k⟩ (Rayleigh quotient) or ‖w_k‖

converges to ``λ_max(M)`` from below: ``⟨v, Mv⟩ ≤ ‖Mv‖ ≤ λ_max`` for unit ``v``. The ``'norm'``
estimate is the larger of the two lower bounds (the safer one for step sizes ``1/λ``); the
Rayleigh quotient is the classical one. It stops once ``|λ_k − λ_{k−1}| ≤ rtol·|λ_k|``.

Vectors are tensors of any shape (a whole batch ``(1, *shape)`` or one sample), real or complex,
on any device and dtype: the iteration only calls ``apply``, norms and one inner product.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["ESTIMATES", "power_iteration", "seeded_vector"]

ESTIMATES = ("rayleigh", "norm")


def seeded_vector(shape: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """A standard normal tensor of ``shape`` drawn on the CPU from ``torch.Generator().manual_seed(seed)``
    in ``dtype`` and then moved to ``device``: the same start on every device."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=gen, dtype=dtype).to(device or "cpu")


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re⟨a, b⟩`` over all entries."""
    if a.is_complex() or b.is_complex():
        return torch.vdot(a.flatten(), b.flatten()).real
    return torch.dot(a.flatten(), b.flatten())


@torch.no_grad()
def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    iterations: int = 100,
    rtol: float = 1e-10,
    estimate: str = "rayleigh",
) -> tuple[float, torch.Tensor]:
    """``(λ, v)``: the largest eigenvalue of the PSD map ``apply`` and a unit vector for it.

    Args:
        apply: ``v -> M v`` for tensors shaped like ``v0``.
        v0: start (any shape; normalised here). A seeded draw (:func:`seeded_vector`) for a
            first estimate, or the previous call's ``v`` to warm-start after ``M`` moved a little.
        iterations: at most this many applications of ``M`` (at least one is made).
        rtol: stop once the estimate changes by at most ``rtol`` relatively; ``0`` runs all
            ``iterations``.
        estimate: ``'rayleigh'`` (``λ_k = ⟨v_k, M v_k⟩``) or ``'norm'`` (``λ_k = ‖M v_k‖``).

    Returns:
        ``λ`` (a float, the estimate from the last unit ``v_k``; ``0.0`` if ``M v_k = 0``) and
        ``v = M v_k / ‖M v_k‖``, the next iterate (a warm start for the next call), shaped like
        ``v0``.
    """
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate: expected one of {ESTIMATES}, got {estimate!r}")
    if not rtol >= 0:
        raise ValueError(f"rtol: expected >= 0, got {rtol!r}")
    v = v0 / torch.linalg.vector_norm(v0).clamp_min(1e-30)
    lam = 0.0
    for _ in range(max(int(iterations), 1)):
        w = apply(v)
        w_norm = torch.linalg.vector_norm(w)
        if not bool(w_norm > 0):
            return 0.0, v
        new = float(w_norm) if estimate == "norm" else float(_real_inner(v, w))
        v = w / w_norm
        converged = rtol > 0 and abs(new - lam) <= rtol * abs(new)
        lam = new
        if converged:
            break
    return lam, v
