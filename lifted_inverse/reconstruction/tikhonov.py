"""Tikhonov regularisation solved by batched conjugate gradients."""
from __future__ import annotations

import torch

from ..operators.base import Identity, LinearOperator
from ..operators.gradient import Gradient
from ._common import (
    Callback,
    SolverResult,
    batch_dot,
    batch_norm,
    bcast,
    check_iterations,
    check_problem,
    iterate,
    per_sample,
)


def _regulariser(reg: str | LinearOperator, shape) -> LinearOperator:
    if isinstance(reg, LinearOperator):
        if reg.in_shape != tuple(shape):
            raise ValueError(f"regulariser: expected input shape {tuple(shape)}, got {reg.in_shape}")
        return reg
    if reg == "identity":
        return Identity(shape)
    if reg == "gradient":
        return Gradient(shape)
    raise ValueError(f"regulariser: expected 'identity', 'gradient' or a LinearOperator, got {reg!r}")


@torch.no_grad()
def tikhonov_cg(
    A: LinearOperator,
    y: torch.Tensor,
    alpha: float | torch.Tensor,
    x0: torch.Tensor | None = None,
    regulariser: str | LinearOperator = "identity",
    max_iter: int = 100,
    tol: float = 1e-6,
    callback: Callback | None = None,
    progress: bool = False,
) -> SolverResult:
    """Minimise ``1/2 ||A x - y||^2 + alpha/2 ||R x||^2`` per sample, i.e. solve the normal equations

        (A^* A + alpha R^* R) x = A^* y

    by conjugate gradients, batched: every sample has its own step sizes and ``alpha`` may be a
    scalar or shape (B,). ``y``: (B, *A.out_shape); returns ``x``: (B, *A.in_shape).
    ``regulariser``: "identity" (R = I), "gradient" (R = forward differences) or an operator.
    Stops when every sample's relative residual ``||b - M x|| / ||b||`` (``b = A^* y``) is at most
    ``tol``. ``history``: ``residual`` (relative), ``energy`` (the objective, batch means).
    ``callback(k, x, info)`` is called after each iteration; returning ``True`` stops.
    """
    check_problem(A, y, x0)
    check_iterations(max_iter, tol)
    R = _regulariser(regulariser, A.in_shape)
    b = A.adjoint(y)
    lam = per_sample(alpha, y.shape[0], b, "alpha")

    def M(v):
        return A.adjoint(A.forward(v)) + bcast(lam, v) * R.adjoint(R.forward(v))

    x = torch.zeros_like(b) if x0 is None else x0.to(b).clone()
    r = b - M(x) if x0 is not None else b.clone()
    b_norm = batch_norm(b).clamp_min(torch.finfo(b.real.dtype).tiny)
    if bool((batch_norm(r) / b_norm <= tol).all()):  # x0 already solves the normal equations
        return SolverResult(x=x, converged=True)

    def steps(x, res):
        p, rr = res.clone(), batch_dot(res, res)
        while True:
            Mp = M(p)
            pMp = batch_dot(p, Mp)
            # samples already solved (rr == 0) keep x: a zero step instead of 0/0
            step = torch.where(pMp > 0, rr / pMp.clamp_min(torch.finfo(pMp.dtype).tiny), torch.zeros_like(rr))
            x = x + bcast(step, x) * p
            res = res - bcast(step, res) * Mp
            rr_new = batch_dot(res, res)
            beta = torch.where(rr > 0, rr_new / rr.clamp_min(torch.finfo(rr.dtype).tiny), torch.zeros_like(rr))
            p = res + bcast(beta, p) * p
            rr = rr_new
            energy = 0.5 * batch_norm(A.forward(x) - y) ** 2 + 0.5 * lam * batch_norm(R.forward(x)) ** 2
            yield x, {"residual": rr.sqrt() / b_norm, "energy": energy}

    return iterate(steps(x, r), x, max_iter, done=lambda info: bool((info["residual"] <= tol).all()),
                   callback=callback, progress=progress, desc="tikhonov-cg",
                   show=lambda info: {"residual": f"{float(info['residual'].max()):.2e}"})
