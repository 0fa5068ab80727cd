"""Stable inversion of one layer ``N(u) = σ(Wu + b)`` by the lifted Bregman fidelity (method §5).

    u_α ∈ argmin_u  B_Ψ(f^δ, Wu + b) + α J(u)       (+ optional box constraint lo ≤ u ≤ hi)

``B_Ψ(f, ·)`` is convex and smooth in ``z = Wu + b`` with ``∇_z B_Ψ(f, z) = σ(z) − f``, so

    ∇_u B_Ψ(f^δ, Wu + b) = Wᵀ(σ(Wu + b) − f^δ),      Lipschitz constant L = ‖W‖²

(σ = prox_Ψ is 1-Lipschitz): no backpropagation through N and no σ′. ``J = TV`` is handled by the
Condat–Vũ primal–dual iteration, ``J ∈ {½‖·‖², ℓ1}`` by FISTA with adaptive restart
(:mod:`.regularizers`); the step is ``τ = 1/L`` with ``‖W‖`` from a seeded power iteration.

Theorem (method §5): if ``B_Ψ(f^δ, Wu† + b) ≤ δ²`` and ``Wᵀv† ∈ ∂J(u†)`` then
``D_J(u†, u_α) ≤ 2δ²/α + α‖v†‖² + (1/α)(Ψ(f^δ + αv†) + Ψ(f^δ − αv†) − 2Ψ(f^δ))`` — ``O(δ)`` for
``α ∝ δ`` (ReLU). :func:`bregman_error` measures ``D_J(u†, u_α)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .layers import AffineStage, describe, squared_norm
from .regularizers import Bounds, Regularizer, clip, make_regularizer
from .result import Callback, InversionResult, IterationLog


def check_data(f: torch.Tensor, shape: Sequence[int], activation, name: str = "f") -> None:
    """Clear errors for data that cannot be the output of the layer."""
    if not isinstance(f, torch.Tensor) or not f.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point torch.Tensor")
    if tuple(f.shape[1:]) != tuple(shape) or f.ndim != len(shape) + 1:
        raise ValueError(
            f"{name}: the network output has shape (B, {', '.join(map(str, shape))}), got data of shape "
            f"{tuple(f.shape)}"
        )
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name}: contains NaN or Inf values")
    if not bool(activation.in_domain(f).all()):
        raise ValueError(
            f"{name}: data outside the range of the output activation {activation!r} (e.g. negative "
            "values for ReLU); project it first, e.g. activation.project(f)"
        )


def _check_alpha(alpha) -> float:
    alpha = float(alpha)
    if not 0 <= alpha < float("inf"):
        raise ValueError(f"alpha: expected a non-negative regularisation parameter, got {alpha}")
    return alpha


def _check_bounds(bounds: Bounds) -> Bounds:
    if bounds is None:
        return None
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds: expected (lo, hi) or None, got {bounds!r}") from None
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"bounds: expected lo < hi, got {bounds!r}")
    return (lo, hi)


class PrimalBlock:
    """Minimises ``g(u) + αJ(u) + ι_box(u)`` one step at a time, given ``∇g`` with Lipschitz ``L``.

    FISTA extrapolation (restart when ``⟨y − u⁺, u⁺ − u⟩ > 0``) for forward–backward regularisers,
    plain Condat–Vũ steps for TV. ``point()`` is where the caller evaluates ``∇g``.
    """

    def __init__(self, u0: torch.Tensor, regularizer: Regularizer, alpha: float, lipschitz: float,
                 bounds: Bounds = None, accelerate: bool = True):
        if not lipschitz > 0:
            raise ValueError(f"lipschitz: expected a positive constant, got {lipschitz}")
        self.reg, self.alpha, self.bounds = regularizer, alpha, bounds
        self.lipschitz = float(lipschitz)
        self.tau = 1.0 / self.lipschitz
        self.u = clip(u0, bounds)
        self.y = self.u
        self.t = 1.0
        self.accelerate = accelerate and regularizer.forward_backward
        self.state = regularizer.init_state(self.u)
        self.last_grad = torch.zeros_like(self.u)

    def set_lipschitz(self, lipschitz: float) -> None:
        self.lipschitz = float(lipschitz)
        self.tau = 1.0 / self.lipschitz

    def point(self) -> torch.Tensor:
        return self.y

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        """One update from ``grad = ∇g(point())``; returns the new iterate ``u``."""
        self.last_grad = grad
        u_old = self.u
        u_new = self.reg.step(self.y, grad, self.tau, self.lipschitz, self.alpha, self.state, self.bounds)
        if self.accelerate:
            if float(((self.y - u_new) * (u_new - u_old)).sum()) > 0:  # adaptive restart
                self.t = 1.0
            t_new = 0.5 * (1.0 + (1.0 + 4.0 * self.t * self.t) ** 0.5)
            self.y = u_new + ((self.t - 1.0) / t_new) * (u_new - u_old)
            self.t = t_new
        else:
            self.y = u_new
        self.u = u_new
        return u_new

    def reset_momentum(self) -> None:
        self.y, self.t = self.u, 1.0


def as_single_layer(model: nn.Module | AffineStage, input_shape: Sequence[int] | None) -> AffineStage:
    """The :class:`AffineStage` ``σ(W · + b)`` of a one-layer model (or the stage itself)."""
    if isinstance(model, AffineStage):
        return model
    if input_shape is None:
        raise ValueError("input_shape: required to describe an nn.Module, e.g. (1, 64, 64)")
    stages = describe(model, input_shape)
    if len(stages) != 1 or not isinstance(stages[0], AffineStage):
        raise ValueError(
            f"model: expected a single layer σ(Wu + b), got {len(stages)} stages; use "
            "lifted_inverse.inversion.invert for deep networks"
        )
    return stages[0]


def invert_single_layer(
    model: nn.Module | AffineStage,
    f: torch.Tensor,
    alpha: float,
    regularizer: str | Regularizer = "tv",
    *,
    input_shape: Sequence[int] | None = None,
    u0: torch.Tensor | None = None,
    iterations: int = 1000,
    tol: float = 1e-6,
    bounds: Bounds = None,
    callbacks: Iterable[Callback] | None = None,
    progress: bool = False,
    time_limit: float | None = None,
    state: dict | None = None,
) -> InversionResult:
    """``u_α ≈ argmin_u B_Ψ(f, Wu + b) + αJ(u)`` for ``f`` of shape ``(B, *out_shape)``.

    ``model``: a one-layer ``nn.Sequential`` (``[Flatten,] Linear|Conv2d, activation``) or an
    :class:`AffineStage`; ``input_shape`` = ``(C, H, W)`` of ``u`` (TV) or ``(n,)``. ``u0``
    (default 0) and ``state`` (a previous result's ``state``) warm-start the solver. Stops after
    ``iterations``, when ``‖u_{k+1} − u_k‖ ≤ tol ‖u_k‖``, after ``time_limit`` seconds, or when a
    callback returns ``True``. ``history['objective']`` is ``Σ_batch B_Ψ(f, Wy + b) + αJ(y)`` at the
    point ``y`` where the gradient is taken.
    """
    stage = as_single_layer(model, input_shape)
    reg = make_regularizer(regularizer)
    alpha = _check_alpha(alpha)
    bounds = _check_bounds(bounds)
    act = stage.activation
    check_data(f, stage.out_shape, act)
    reg.check(stage.in_shape)
    if stage.bias.dtype != f.dtype or stage.bias.device != f.device:
        raise TypeError(
            f"f: dtype/device {f.dtype}/{f.device} differ from the model's {stage.bias.dtype}/"
            f"{stage.bias.device}; move the model with model.to(f)"
        )
    if u0 is None:
        u0 = torch.zeros((f.shape[0], *stage.in_shape), dtype=f.dtype, device=f.device)
    elif tuple(u0.shape) != (f.shape[0], *stage.in_shape):
        raise ValueError(f"u0: expected shape {(f.shape[0], *stage.in_shape)}, got {tuple(u0.shape)}")
    lipschitz = squared_norm(stage.op, f)
    block = PrimalBlock(u0.detach().clone(), reg, alpha, lipschitz, bounds)
    if state and "p" in state:
        block.state["p"] = state["p"].clone()
    log = IterationLog(iterations, tol, callbacks, progress, time_limit, "lifted inversion (1 layer)")
    with torch.no_grad():
        for _ in range(iterations):
            y = block.point()
            z = stage.pre_activation(y)
            grad = stage.op.adjoint(act(z) - f)
            objective = float(act.bregman(f, z).sum() + alpha * reg.value(y).sum())
            u_old = block.u
            u = block.step(grad)
            if log.record(u, u_old, objective):
                break
    seconds = log.close()
    return InversionResult(
        u=block.u, alpha=alpha, iterations=log.count, converged=log.converged, seconds=seconds,
        method=f"lifted-bregman/{reg.name}", history=log.history,
        state={**block.state, "grad": block.last_grad, "regularizer": reg},
    )


def bregman_error(result: InversionResult, u_true: torch.Tensor) -> torch.Tensor:
    """``D_J(u†, u_α)`` per sample ``(B,)``, with the subgradient of ``J`` at ``u_α`` the solver
    certifies (TV: ``∇ᵀp`` from the dual variable; ℓ1/ℓ2: from the optimality condition)."""
    reg: Regularizer = result.state["regularizer"]
    return reg.bregman_distance(u_true, result.u, result.state, result.state["grad"], result.alpha)

