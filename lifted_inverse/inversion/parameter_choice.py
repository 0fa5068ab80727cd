"""Choosing the regularisation parameter α from the noise level δ.

* a priori: ``α = c δ^p`` (``p = 1`` is the single-layer theorem's choice: ``D_J(u†, u_α) = O(δ)``);
* discrepancy principle (Morozov): the largest ``α`` on the geometric grid ``α_k = α_0 q^k`` with
  ``‖N(u_α) − f^δ‖ ≤ τ η``, where ``η`` is the norm of the data error (for the noise of
  :mod:`.noise`, ``η = ‖f^δ − N(u†)‖ ≤ √2 δ``) and ``τ > 1``. The grid is searched from large to
  small ``α``, each solve warm-started from the previous one; the residual is taken per batch
  (Euclidean norm over all samples).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .result import InversionResult

#: ``solve(alpha, previous_result_or_None) -> InversionResult``
Solver = Callable[[float, "InversionResult | None"], InversionResult]


def a_priori_alpha(delta: float, c: float = 1.0, exponent: float = 1.0) -> float:
    """``α = c δ^exponent``."""
    if not delta >= 0 or not c > 0 or not exponent > 0:
        raise ValueError(f"a_priori_alpha: expected delta >= 0, c > 0, exponent > 0; got {delta}, {c}, {exponent}")
    return float(c) * float(delta) ** float(exponent)


@dataclass
class DiscrepancyResult:
    """The chosen ``alpha`` and its ``result``; ``alphas``/``residuals``: the search path."""

    alpha: float
    result: InversionResult
    satisfied: bool
    alphas: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)


def discrepancy_principle(
    solve: Solver,
    forward: Callable[[torch.Tensor], torch.Tensor],
    f: torch.Tensor,
    noise_norm: float,
    tau: float = 1.5,
    alpha0: float = 1.0,
    q: float = 0.5,
    max_steps: int = 20,
) -> DiscrepancyResult:
    """Largest ``α = α0 q^k`` (``k = 0..max_steps−1``) with ``‖forward(u_α) − f‖ ≤ τ·noise_norm``.

    ``solve(α, previous)`` returns the inversion for ``α`` (use ``previous.u`` as a warm start);
    ``forward`` evaluates ``N``. If no grid value satisfies the principle the smallest ``α`` is
    returned with ``satisfied=False``.
    """
    if not noise_norm > 0:
        raise ValueError(f"noise_norm: expected a positive data-error norm, got {noise_norm}")
    if not tau > 1:
        raise ValueError(f"tau: the discrepancy principle needs tau > 1, got {tau}")
    if not 0 < q < 1:
        raise ValueError(f"q: expected a reduction factor in (0, 1), got {q}")
    if not alpha0 > 0 or max_steps < 1:
        raise ValueError("alpha0, max_steps: expected alpha0 > 0 and max_steps >= 1")
    alphas, residuals = [], []
    result = None
    alpha = float(alpha0)
    for _ in range(max_steps):
        result = solve(alpha, result)
        with torch.no_grad():
            residual = float(torch.linalg.vector_norm(forward(result.u) - f))
        alphas.append(alpha)
        residuals.append(residual)
        if residual <= tau * noise_norm:
            return DiscrepancyResult(alpha, result, True, alphas, residuals)
        alpha *= q
    return DiscrepancyResult(alphas[-1], result, False, alphas, residuals)
