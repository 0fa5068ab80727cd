"""Gradient-based inversion baseline: backpropagation through ``N``.

    min_u  ½‖N(u) − f^δ‖² + α J_ε(u)        (+ optional box, by projection after each step)

with the gradient of the data term from autograd (``σ′`` and all layers' Jacobians).

* ``method='gd'``: proximal gradient descent ``u⁺ = prox_{sαJ + ι_box}(u − s∇_u ½‖N(u) − f‖²)`` with
  the same exact proxes as the lifted solver (TV: warm-started fast dual projected gradient) and
  backtracking on ``s`` (doubled after each accepted step, halved until the quadratic upper
  bound holds). It differs from the lifted single-layer solver only in the fidelity.
* ``method='adam'``: Adam (learning rate ``lr``) on the smoothed objective, with
  TV ``J_ε(u) = Σ_{c,i,j} sqrt(‖(∇u)_{c,:,i,j}‖² + ε²)`` (Charbonnier), ℓ1 ``Σ sqrt(u² + ε²)``,
  ½‖·‖² exact; the box by projection after each step.

Same stopping rules, history and callbacks as the lifted solvers, so both can be run with equal
iteration/time budgets.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .regularizers import Bounds, Regularizer, clip, make_regularizer
from .result import Callback, InversionResult, IterationLog
from .single_layer import _check_alpha, _check_bounds


def smoothed_regularizer(reg: Regularizer, u: torch.Tensor, eps: float) -> torch.Tensor:
    """``J_ε(u)`` summed over the batch (module docstring): the smooth surrogate of the
    regulariser's functional (``Functional.smoothed``)."""
    smoothed = getattr(reg.functional, "smoothed", None)
    if smoothed is None:
        raise ValueError(f"regularizer: no smoothed form for {reg!r}")
    return smoothed(u, eps).sum()


def invert_gradient(
    model: nn.Module,
    f: torch.Tensor,
    alpha: float,
    regularizer: str | Regularizer = "tv",
    *,
    input_shape: Sequence[int],
    method: str = "adam",
    u0: torch.Tensor | None = None,
    iterations: int = 1000,
    lr: float = 1e-2,
    eps: float = 1e-3,
    tol: float = 0.0,
    bounds: Bounds = None,
    callbacks: Iterable[Callback] | None = None,
    progress: bool = False,
    time_limit: float | None = None,
) -> InversionResult:
    """Minimise ``½‖N(u) − f‖² + αJ(u)`` by proximal gradient descent or Adam (``J_ε``).

    ``f``: ``(B, *output_shape)``; ``u0`` defaults to zeros of shape ``(B, *input_shape)`` (note
    that ``u0 = 0`` is a stationary point for a bias-free ReLU layer: prefer e.g. ``0.5``).
    ``lr``: Adam's learning rate, or the initial step of ``gd``. ``history['objective']`` is the
    objective (``J`` exact for ``gd``, ``J_ε`` for Adam) at the iterate before each step.
    """
    if method not in ("adam", "gd"):
        raise ValueError(f"method: expected 'adam' or 'gd', got {method!r}")
    reg = make_regularizer(regularizer)
    alpha = _check_alpha(alpha)
    bounds = _check_bounds(bounds)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive smoothing parameter, got {eps}")
    if not lr > 0:
        raise ValueError(f"lr: expected a positive step, got {lr}")
    in_shape = tuple(int(s) for s in input_shape)
    reg.check(in_shape)
    if u0 is None:
        u0 = torch.zeros((f.shape[0], *in_shape), dtype=f.dtype, device=f.device)
    elif tuple(u0.shape) != (f.shape[0], *in_shape):
        raise ValueError(f"u0: expected shape {(f.shape[0], *in_shape)}, got {tuple(u0.shape)}")
    with torch.no_grad():
        out = model(u0)
    if out.shape != f.shape:
        raise ValueError(f"f: the network output has shape {tuple(out.shape)}, got data of shape {tuple(f.shape)}")

    def data_term(u: torch.Tensor) -> torch.Tensor:
        r = model(u) - f
        return 0.5 * (r * r).sum()

    def objective(u: torch.Tensor) -> torch.Tensor:
        return data_term(u) + alpha * smoothed_regularizer(reg, u, eps)

    u = clip(u0.detach().clone(), bounds).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr) if method == "adam" else None
    prox_state = reg.init_state(u.detach())
    step = lr
    log = IterationLog(iterations, tol, callbacks, progress, time_limit, f"gradient inversion ({method})")
    for _ in range(iterations):
        u_old = u.detach().clone()
        if opt is not None:
            value = objective(u)
            grad, = torch.autograd.grad(value, u)
            with torch.no_grad():
                u.grad = grad
                opt.step()
                u.copy_(clip(u, bounds))
            record_value = float(value.detach())
        else:
            value = data_term(u)
            grad, = torch.autograd.grad(value, u)
            with torch.no_grad():
                step *= 2.0
                for _ in range(60):  # backtracking: h(u⁺) ≤ h(u) + ⟨∇h, u⁺ − u⟩ + ‖u⁺ − u‖²/(2s)
                    state = {k: v.clone() for k, v in prox_state.items()}
                    trial = reg.step(u_old, grad, step, 1.0 / step, alpha, state, bounds)
                    d = trial - u_old
                    bound = float(value) + float((d * grad).sum()) + float((d * d).sum()) / (2.0 * step)
                    if float(data_term(trial)) <= bound or step < 1e-20:
                        break
                    step *= 0.5
                prox_state = state
                u.copy_(trial)
            record_value = float(value.detach()) + alpha * float(reg.value(u_old).sum())
        if log.record(u.detach(), u_old, record_value):
            break
    seconds = log.close()
    return InversionResult(
        u=u.detach(), alpha=alpha, iterations=log.count, converged=log.converged, seconds=seconds,
        method=f"gradient-{method}/{reg.name}" + ("-smoothed" if method == "adam" else ""), history=log.history, state={"lr": lr, "step": step, **prox_state},
    )
