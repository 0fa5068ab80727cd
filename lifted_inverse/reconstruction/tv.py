"""Total-variation regularised reconstruction by the primal-dual hybrid gradient method.

Problem, per sample (x: (B, *A.in_shape) with in_shape = (C, H, W), y: (B, *A.out_shape)):

    min_x  E(x) = 1/2 ||sqrt(w) (A x - y)||^2 + alpha TV(x)  [+ indicator(x >= 0)],
    TV(x) = sum_{c,i,j} ||(grad x)[c, :, i, j]||_2   (isotropic, forward differences, Neumann),

with data weights ``w >= 0`` (default 1; e.g. inverse variances for penalised weighted least
squares in low-dose CT; ``w = 0`` ignores a measurement entry).

Chambolle-Pock (2011, Alg. 1, theta = 1) with K = [A; grad], f(p, q) = f_1(p) + f_2(q),
f_1(p) = 1/2||sqrt(w)(p - y)||^2, f_2(q) = alpha ||q||_{2,1}, g = indicator(x >= 0) or 0. The dual
variables p (data) and q (TV) each get their own step (sigma_A, sigma_g) with
tau (sigma_A ||A||^2 + sigma_g ||grad||^2) < 1:

    p <- w (p + sigma_A (A xbar - y)) / (w + sigma_A)         prox of sigma_A f_1^*
    q <- project_{|q_ij| <= alpha}(q + sigma_g grad xbar)     prox of sigma_g f_2^*
    x+ <- prox_{tau g}(x - tau (A^* p + grad^* q)),  xbar <- 2 x+ - x

Stopping: the relative primal-dual gap ``G(x_k, xi_{k+1}) / E(x_k) <= tol`` for every sample,
``xi = (p, q)``. ``G`` is the gap of the saddle function ``L(x, xi) = <K x, xi> + g(x) - f^*(xi)``
restricted to a box ``X`` (Chambolle & Pock 2011, eq. 2.5):

    G(x, xi) = sup_xi' L(x, xi') - inf_{x' in X} L(x', xi)
             = E(x) + f_1^*(p) - inf_{x' in X} <K^* xi, x'>,
    f_1^*(p) = sum p^2 / (2 w) + <p, y>   (p = 0 where w = 0; f_2^*(q) = 0 as q is feasible),
    X = [0, U] (x >= 0) or [-U, U] per pixel,  U = 2 max(max_{j <= k} ||x_j||_inf, s),
    inf_{x' in X} <v, x'> = U sum min(v, 0)  or  -U ||v||_1,   v = K^* xi = A^* p + grad^* q,

with ``s = ||y|| / (||A|| sqrt(n))`` (the root-mean-square size of an image that explains ``y``;
it keeps ``X`` from shrinking to the first iterates, n = pixels). Since ``x_k`` lies in ``X``,
``G >= E(x_k) - L(x_k, xi) >= 0``; ``G = 0`` at a saddle point; and ``G >= E(x_k) - min_X E``,
which bounds ``E(x_k) - min E`` once the minimiser lies in ``X``. ``K^* xi_{k+1}`` is the vector
the primal step computes anyway, so the gap costs no operator application.

Step balance: PDHG is fastest when ``tau / sigma`` matches ``||x*|| / ||xi*||`` (in the balanced
units below). At the solution ``A^* p ~ -grad^* q`` with ``|q_ij| <= alpha``, so ``||xi*|| ~
alpha sqrt(n)`` while ``||x*|| ~ ||y|| / ||A||``; the default ``balance`` is therefore
``0.015 ||y|| / (||A|| alpha sqrt(n))`` (per sample, clipped to [1e-8, 1e8] only to keep the steps
finite for y = 0: operators in physical units, e.g. the ``lidc`` scanner in mm, need ratios near
1e-5, which a tighter clip would stall); the constant 0.015
was fitted on one CT problem (docs/results.md) and carries over to deblurring, where the ratio
is 400 times larger.

For A = Identity without weights (ROF denoising) the data term is instead handled in the primal
prox ``x+ = max((v + tau y) / (1 + tau), 0)`` and the gap is the exact duality gap
``E(x_k) - D(q_k)``, ``D(q) = min_{x (>= 0)} 1/2||x - y||^2 + <grad^* q, x>``.
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
    bcast,
    check_iterations,
    check_problem,
    iterate,
    per_sample,
)
from .functionals import GRADIENT_NORM_SQ, GroupL1, IndicatorBox, nonnegative

GRAD_NORM = math.sqrt(GRADIENT_NORM_SQ)
_tv = GroupL1(dim=2)  # TV(x) from the gradient ∇x (B, C, 2, H, W): the (2,1)-norm
_BALANCE = 0.015  # the constant of the default step balance (module docstring)
_BALANCE_RANGE = (1e-8, 1e8)  # the default balance's clip (module docstring)


def data_weights(weights, y: torch.Tensor) -> torch.Tensor:
    """``weights`` (a scalar, ``A.out_shape`` or ``(B, *A.out_shape)``) as a tensor broadcasting
    against ``y`` (B, *A.out_shape); ``ValueError`` unless finite and non-negative."""
    w = torch.as_tensor(weights, dtype=y.dtype, device=y.device)
    if w.ndim > 0 and tuple(w.shape) not in (tuple(y.shape), tuple(y.shape[1:])):
        raise ValueError(f"weights: expected a scalar or shape {tuple(y.shape[1:])} or {tuple(y.shape)}, "
                         f"got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights: expected finite non-negative values")
    return w


@torch.no_grad()
def tv_pdhg(
    A: LinearOperator,
    y: torch.Tensor,
    alpha: float | torch.Tensor,
    x0: torch.Tensor | None = None,
    nonneg: bool = False,
    max_iter: int = 500,
    tol: float = 1e-4,
    tau: float | None = None,
    balance: float | None = None,
    A_norm: float | None = None,
    weights: float | torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> SolverResult:
    """TV-regularised least squares ``min_x 1/2||sqrt(w)(Ax - y)||^2 + alpha TV(x) (+ x >= 0)``
    by PDHG (module docstring).

    ``alpha``: scalar or (B,); ``nonneg`` adds the constraint x >= 0 (off by default:
    stored values such as Hounsfield units may be negative; ``lifted-inverse reconstruct`` turns it
    on for images without negative values); ``weights`` ``w``: None (all
    ones), a scalar, ``A.out_shape`` or ``(B, *A.out_shape)``, finite and >= 0. Step sizes come
    from ``A.norm()`` (or ``A_norm``) and ``||grad|| <= sqrt(8)``: the operator is balanced as
    K~ = [A/||A||; grad/sqrt(8)] (||K~|| <= sqrt(2)) with ``tau~ = balance * 0.99/sqrt(2)``,
    ``sigma~ = 0.99 / (sqrt(2) balance)``, i.e. ``tau = tau~``, ``sigma_A = sigma~/||A||^2``,
    ``sigma_g = sigma~/8``; ``tau`` overrides ``tau~`` (sigma~ follows so that tau~ sigma~ = 0.99/2).
    ``balance`` (primal/dual step ratio) defaults to the scale rule of the module docstring, per
    sample (every sample has its own steps, so a batch gives the results of its samples run alone).
    For A = Identity (unweighted), K = grad only and ``tau = balance 0.99/sqrt(8)`` (default
    balance 1), ``sigma_g = 0.99/(8 tau)``.
    Stops when every sample's relative primal-dual gap ``gap / E`` is <= ``tol`` (converged),
    else after ``max_iter`` iterations.

    ``history``: ``energy`` (E at x_k), ``gap`` (the primal-dual gap G >= 0, module docstring),
    ``rel_gap`` (``gap / E``), ``rel_change`` (``||x_{k+1} - x_k|| / ||x_{k+1}||``).
    ``callback(k, x, info)`` gets these per-sample values; returning ``True`` stops.
    Returns a :class:`SolverResult`.
    """
    check_problem(A, y, x0)
    check_iterations(max_iter, tol)
    if len(A.in_shape) != 3:
        raise ValueError(f"A: TV needs images (C, H, W) as input, got in_shape {A.in_shape}")
    w = None if weights is None else data_weights(weights, y)
    denoise = isinstance(A, Identity) and w is None
    grad = Gradient(A.in_shape)
    B = y.shape[0]
    lam = per_sample(alpha, B, y, "alpha")
    n_pixels = math.prod(A.in_shape)
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
    tiny = torch.finfo(y.dtype).tiny

    if balance is not None and not balance > 0:
        raise ValueError(f"balance: expected > 0, got {balance!r}")
    if tau is not None and not tau > 0:
        raise ValueError(f"tau: expected > 0, got {tau!r}")
    if denoise:
        # K = grad only; the data term is in the primal prox
        tau_ = (0.99 / GRAD_NORM) * (1.0 if balance is None else balance) if tau is None else float(tau)
        tau_ = torch.full((B,), tau_, dtype=lam.dtype, device=lam.device)
        sigma_g = 0.99 / (GRAD_NORM ** 2 * tau_)
    else:
        a_norm = float(A.norm(device=y.device, dtype=y.dtype) if A_norm is None else A_norm)
        if not a_norm > 0:
            raise ValueError(f"A: operator norm must be positive, got {a_norm}")
        wy = y if w is None else w.sqrt() * y
        y_scale = batch_norm(wy) / (a_norm * math.sqrt(n_pixels))  # s of the module docstring, (B,)
        # per-sample steps: a sample's iterates do not depend on the others in the batch
        ratio = (_BALANCE * y_scale / lam.clamp_min(tiny)).clamp(*_BALANCE_RANGE) if balance is None \
            else torch.full((B,), float(balance), dtype=lam.dtype, device=lam.device)
        tau_ = (0.99 / math.sqrt(2.0)) * ratio if tau is None else torch.full_like(ratio, float(tau))
        sigma_ = 0.99 / (2.0 * tau_)
        sigma_a, sigma_g = sigma_ / a_norm ** 2, sigma_ / GRAD_NORM ** 2

    def data_term(residual):
        r2 = residual.abs() ** 2 if w is None else w * residual.abs() ** 2
        return 0.5 * r2.flatten(1).sum(1)

    def conj_data(p):  # f_1^*(p) = Σ p²/(2w) + <p, y>; p = 0 exactly where w = 0
        quad = p.abs() ** 2 if w is None else torch.where(w > 0, p.abs() ** 2 / w.clamp_min(tiny), 0.0)
        return 0.5 * quad.flatten(1).sum(1) + batch_dot(p, y)

    def box_inf(v, bound):  # inf over X (module docstring) of <v, x'>
        if nonneg:
            return bound * v.clamp_max(0).flatten(1).sum(1)
        return -bound * v.abs().flatten(1).sum(1)

    def steps(x):
        t = bcast(tau_, x)
        gx = grad.forward(x)
        q = torch.zeros_like(gx)
        gx_bar = gx
        if denoise:
            energy = data_term(x - y) + lam * _tv(gx)
        else:
            ax = A.forward(x)
            p = torch.zeros_like(ax)
            ax_bar = ax
            energy = data_term(ax - y) + lam * _tv(gx)
            reach = torch.maximum(x.abs().flatten(1).amax(1), y_scale)
        while True:
            q = tv_dual.prox(q + bcast(sigma_g, gx_bar) * gx_bar, sigma_g)
            kq = grad.adjoint(q)
            if denoise:
                x_new = constraint.prox((x - t * kq + t * y) / (1.0 + t))
            else:
                s_a = bcast(sigma_a, ax_bar)
                v = p + s_a * (ax_bar - y)
                p = v / (1.0 + s_a) if w is None else w * v / (w + s_a)
                k_xi = kq + A.adjoint(p)
                reach = torch.maximum(reach, x.abs().flatten(1).amax(1))
                gap = energy + conj_data(p) - box_inf(k_xi, 2.0 * reach)  # G(x_k, ξ_{k+1})
                x_new = constraint.prox(x - t * k_xi)
            # K xbar = 2 K x_new - K x_old by linearity: one application of A and grad per iteration
            gx_new = grad.forward(x_new)
            gx_bar = 2 * gx_new - gx
            if denoise:
                energy_new = data_term(x_new - y) + lam * _tv(gx_new)
                xd = constraint.prox(y - kq)
                gap = energy_new - (data_term(xd - y) + batch_dot(kq, xd))  # E(x_{k+1}) - D(q_{k+1})
                rel_gap = gap / energy_new.abs().clamp_min(tiny)
            else:
                ax_new = A.forward(x_new)
                ax_bar = 2 * ax_new - ax
                ax = ax_new
                rel_gap = gap / energy.abs().clamp_min(tiny)
                energy_new = data_term(ax_new - y) + lam * _tv(gx_new)
            change = batch_norm(x_new - x) / batch_norm(x_new).clamp_min(tiny)
            x, gx, energy = x_new, gx_new, energy_new
            yield x, {"energy": energy, "gap": gap, "rel_gap": rel_gap, "rel_change": change}

    return iterate(steps(x), x, max_iter, done=lambda info: bool((info["rel_gap"] <= tol).all()),
                   callback=callback, progress=progress, desc="tv-pdhg",
                   show=lambda info: {"energy": f"{float(info['energy'].mean()):.4g}",
                                      "gap": f"{float(info['rel_gap'].max()):.1e}"})


def tv_denoise(y: torch.Tensor, alpha: float | torch.Tensor, nonneg: bool = False,
               max_iter: int = 300, tol: float = 1e-4, **kwargs) -> SolverResult:
    """ROF denoising ``min_x 1/2||x - y||^2 + alpha TV(x)`` of images ``y`` (B, C, H, W):
    :func:`tv_pdhg` with ``A = Identity``."""
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise ValueError(f"y: expected a (B, C, H, W) tensor, got {getattr(y, 'shape', type(y).__name__)}")
    return tv_pdhg(Identity(y.shape[1:]), y, alpha, nonneg=nonneg, max_iter=max_iter, tol=tol, **kwargs)
