"""Total-variation regularised reconstruction by the primal-dual hybrid gradient method.

Problem, per sample (x: (B, *A.in_shape) with in_shape = (C, H, W), y: (B, *A.out_shape)):

    min_x  1/2 ||A x - y||^2 + alpha TV(x)  [+ indicator(x >= 0)],
    TV(x) = sum_{c,i,j} ||(grad x)[c, :, i, j]||_2   (isotropic, forward differences, Neumann).

Chambolle-Pock (2011, Alg. 1, theta = 1) with K = [A; grad], f(p, q) = 1/2||p - y||^2 +
alpha ||q||_{2,1}, g = indicator(x >= 0) or 0. The dual variables p (data) and q (TV) each get
their own step (sigma_A, sigma_g) with tau (sigma_A ||A||^2 + sigma_g ||grad||^2) < 1:

    p <- (p + sigma_A (A xbar - y)) / (1 + sigma_A)           prox of sigma_A f_1^*
    q <- project_{|q_ij| <= alpha}(q + sigma_g grad xbar)     prox of sigma_g f_2^*
    x+ <- prox_{tau g}(x - tau (A^* p + grad^* q)),  xbar <- 2 x+ - x

For A = Identity the data term is instead handled in the primal prox
``x+ = max((v + tau y) / (1 + tau), 0)`` and the exact duality gap is tracked.
"""
from __future__ import annotations

import math

import torch

from ..operators.base import Identity, LinearOperator
from ..operators.gradient import Gradient
from ._common import (
    Callback,
    SolverResult,
    batch_dot,
    batch_norm,
    check_iterations,
    check_problem,
    iterate,
    per_sample,
)
from .functionals import GRADIENT_NORM_SQ, GroupL1, IndicatorBox, nonnegative

GRAD_NORM = math.sqrt(GRADIENT_NORM_SQ)
_tv = GroupL1(dim=2)  # TV(x) from the gradient ∇x (B, C, 2, H, W): the (2,1)-norm


@torch.no_grad()
def tv_pdhg(
    A: LinearOperator,
    y: torch.Tensor,
    alpha: float | torch.Tensor,
    x0: torch.Tensor | None = None,
    nonneg: bool = False,
    max_iter: int = 500,
    tol: float = 1e-5,
    tau: float | None = None,
    balance: float | None = None,
    A_norm: float | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> SolverResult:
    """TV-regularised least squares ``min_x 1/2||Ax - y||^2 + alpha TV(x) (+ x >= 0)`` by PDHG.

    ``alpha``: scalar or (B,); ``nonneg`` adds the constraint x >= 0. Step sizes come from
    ``A.norm()`` (or ``A_norm``) and ``||grad|| <= sqrt(8)``: the operator is balanced as
    K~ = [A/||A||; grad/sqrt(8)] (||K~|| <= sqrt(2)) with ``tau~ = balance * 0.99/sqrt(2)``,
    ``sigma~ = 0.99 / (sqrt(2) balance)``, i.e. ``tau = tau~``, ``sigma_A = sigma~/||A||^2``,
    ``sigma_g = sigma~/8``; ``tau`` overrides ``tau~`` (sigma~ follows so that tau~ sigma~ = 0.99/2).
    ``balance`` (primal/dual step ratio) defaults to 0.03: images in [0, 1] are small next to
    the balanced duals, so the primal step must be small (docs/results.md). For A = Identity,
    K = grad only and ``tau = balance 0.99/sqrt(8)``
    (default balance 1), ``sigma_g = 0.99/(8 tau)``.
    Stops when every sample's relative change ``||x_{k+1} - x_k|| / ||x_{k+1}||`` is <= ``tol``.

    ``history``: ``energy`` (the objective at x_k), ``rel_change``; for A = Identity also ``gap``,
    the duality gap ``E(x_k) - D(q_k) >= 0`` (-> 0 at the solution), where
    ``D(q) = min_{x (>= 0)} 1/2||x - y||^2 + <grad^* q, x>``. ``callback(k, x, info)`` gets these
    per-sample values; returning ``True`` stops. Returns a :class:`SolverResult`.
    """
    check_problem(A, y, x0)
    check_iterations(max_iter, tol)
    if len(A.in_shape) != 3:
        raise ValueError(f"A: TV needs images (C, H, W) as input, got in_shape {A.in_shape}")
    if balance is None:
        balance = 1.0 if isinstance(A, Identity) else 0.03
    if not balance > 0:
        raise ValueError(f"balance: expected > 0, got {balance!r}")
    grad = Gradient(A.in_shape)
    denoise = isinstance(A, Identity)
    B = y.shape[0]
    lam = per_sample(alpha, B, y, "alpha")
    if x0 is not None:
        x = x0.to(y).clone()
    elif denoise:
        x = y.clone()
    else:
        x = torch.zeros((B, *A.in_shape), dtype=y.dtype, device=y.device)
    constraint = nonnegative() if nonneg else IndicatorBox()
    x = constraint.prox(x)
    # prox of σ f_2^* for f_2 = α‖·‖_{2,1}: projection onto the balls of radius α
    tv_dual = GroupL1(dim=2, weight=lam).convex_conj

    if denoise:
        # K = grad only; the data term is in the primal prox
        tau_ = (0.99 / GRAD_NORM) * balance if tau is None else float(tau)
        sigma_g = 0.99 / (GRAD_NORM ** 2 * tau_)
        sigma_a = 0.0
    else:
        a_norm = float(A.norm(device=y.device, dtype=y.dtype) if A_norm is None else A_norm)
        if not a_norm > 0:
            raise ValueError(f"A: operator norm must be positive, got {a_norm}")
        tau_ = (0.99 / math.sqrt(2.0)) * balance if tau is None else float(tau)
        sigma_ = 0.99 / (2.0 * tau_)
        sigma_a, sigma_g = sigma_ / a_norm ** 2, sigma_ / GRAD_NORM ** 2
    if not tau_ > 0:
        raise ValueError(f"tau: expected > 0, got {tau!r}")

    def steps(x):
        gx = grad.forward(x)
        q = torch.zeros_like(gx)
        gx_bar = gx
        if not denoise:
            ax = A.forward(x)
            p = torch.zeros_like(ax)
            ax_bar = ax
        while True:
            q = tv_dual.prox(q + sigma_g * gx_bar, sigma_g)
            v = x - tau_ * grad.adjoint(q)
            if denoise:
                x_new = (v + tau_ * y) / (1.0 + tau_)
            else:
                p = (p + sigma_a * (ax_bar - y)) / (1.0 + sigma_a)
                x_new = v - tau_ * A.adjoint(p)
            x_new = constraint.prox(x_new)
            # K xbar = 2 K x_new - K x_old by linearity: one application of A and grad per iteration
            gx_new = grad.forward(x_new)
            gx_bar = 2 * gx_new - gx
            if denoise:
                data = 0.5 * batch_norm(x_new - y) ** 2
            else:
                ax_new = A.forward(x_new)
                ax_bar = 2 * ax_new - ax
                ax = ax_new
                data = 0.5 * batch_norm(ax_new - y) ** 2
            energy = data + lam * _tv(gx_new)
            change = batch_norm(x_new - x) / batch_norm(x_new).clamp_min(torch.finfo(x.dtype).tiny)
            x, gx = x_new, gx_new
            info = {"energy": energy, "rel_change": change}
            if denoise:
                w = grad.adjoint(q)
                xd = constraint.prox(y - w)
                dual = 0.5 * batch_norm(xd - y) ** 2 + batch_dot(w, xd)
                info["gap"] = energy - dual
            yield x, info

    return iterate(steps(x), x, max_iter, done=lambda info: bool((info["rel_change"] <= tol).all()),
                   callback=callback, progress=progress, desc="tv-pdhg",
                   show=lambda info: {"energy": f"{float(info['energy'].mean()):.4g}",
                                      "change": f"{float(info['rel_change'].max()):.1e}"})


def tv_denoise(y: torch.Tensor, alpha: float | torch.Tensor, nonneg: bool = False,
               max_iter: int = 300, tol: float = 1e-5, **kwargs) -> SolverResult:
    """ROF denoising ``min_x 1/2||x - y||^2 + alpha TV(x)`` of images ``y`` (B, C, H, W):
    :func:`tv_pdhg` with ``A = Identity``."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise ValueError(f"y: expected a (B, C, H, W) tensor, got {getattr(y, 'shape', type(y).__name__)}")
    return tv_pdhg(Identity(y.shape[1:]), y, alpha, nonneg=nonneg, max_iter=max_iter, tol=tol, **kwargs)
