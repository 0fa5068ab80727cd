"""Stable inversion of one layer ``N(u) = σ(Wu + b)`` by the lifted Bregman fidelity (method §5).

    u_α ∈ argmin_u  B_Ψ(f^δ, Wu + b) + α J(u)       (+ optional box constraint lo ≤ u ≤ hi)

``B_Ψ(f, ·)`` is convex and smooth in ``z = Wu + b`` with ``∇_z B_Ψ(f, z) = σ(z) − f``, so

    ∇_u B_Ψ(f^δ, Wu + b) = Wᵀ(σ(Wu + b) − f^δ),      Lipschitz constant L = ‖W‖²

(σ = prox_Ψ is 1-Lipschitz): no backpropagation through N and no σ′. ``J`` enters by its own step
(:mod:`.regularizers`: FISTA with adaptive restart on forward–backward steps, TV's prox by a
warm-started dual iteration, or Condat–Vũ primal–dual steps); the step is ``τ = 1/L`` with ``‖W‖`` from a seeded power iteration. This is
the lifted inversion objective of :mod:`lifted_inverse.lifted.inverse` for a network with one layer
(no hidden state), so only its ``u``-block runs.

Theorem (method §5): if ``B_Ψ(f^δ, Wu† + b) ≤ δ²`` and ``Wᵀv† ∈ ∂J(u†)`` then
``D_J(u†, u_α) ≤ 2δ²/α + α‖v†‖² + (1/α)(Ψ(f^δ + αv†) + Ψ(f^δ − αv†) − 2Ψ(f^δ))`` — ``O(δ)`` for
``α ∝ δ`` (ReLU, as long as ``f^δ ± αv† ∈ dom Ψ``: otherwise the bound is infinite).
:func:`bregman_error` measures ``D_J(u†, u_α)``, :func:`rate_bound` evaluates the right-hand side
and :func:`source_condition_pair` constructs a pair ``(u†, v†)`` for which the theorem applies.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..lifted.inverse import LiftedInversion
from ..lifted.model import AffineLayer, LiftedNetwork, lift
from .regularizers import Bounds, Regularizer, make_regularizer
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


def lifted_network(model: nn.Module | LiftedNetwork, input_shape: Sequence[int] | None) -> LiftedNetwork:
    """The :class:`LiftedNetwork` of ``model`` (``lift(model, input_shape)``), or ``model`` itself."""
    if isinstance(model, LiftedNetwork):
        return model
    if input_shape is None:
        raise ValueError("input_shape: required to lift an nn.Module, e.g. (1, 28, 28)")
    return lift(model, input_shape)


def check_model(net: LiftedNetwork, f: torch.Tensor) -> None:
    """``f`` must have the dtype and device of the network's weights."""
    w = net.layers[0].parameters()[0]
    if w.dtype != f.dtype or w.device != f.device:
        raise TypeError(
            f"f: dtype/device {f.dtype}/{f.device} differ from the model's {w.dtype}/{w.device}; "
            "move the model with model.to(f)"
        )


def start(net: LiftedNetwork, f: torch.Tensor, u0: torch.Tensor | None) -> torch.Tensor:
    """The initial ``u`` (default 0) of shape ``(B, *net.input_shape)``, a copy."""
    shape = (f.shape[0], *net.input_shape)
    if u0 is None:
        return torch.zeros(shape, dtype=f.dtype, device=f.device)
    if tuple(u0.shape) != shape:
        raise ValueError(f"u0: expected shape {shape}, got {tuple(u0.shape)}")
    return u0.detach().clone()


def checked_problem(net: LiftedNetwork, f: torch.Tensor, alpha, regularizer, bounds: Bounds,
                    u0: torch.Tensor | None) -> tuple[Regularizer, float, Bounds, torch.Tensor]:
    """The checked ``(J, α, bounds, u0)`` of an inversion of ``net`` from data ``f``: clear errors
    for data the network cannot produce, a ``J`` undefined on its inputs, a negative ``α``, an
    empty box, a start or data of the wrong shape, dtype or device."""
    reg = make_regularizer(regularizer)
    alpha = _check_alpha(alpha)
    bounds = _check_bounds(bounds)
    check_data(f, net.state_shapes[-1], net.output_layer.activation)
    reg.check(net.input_shape)
    check_model(net, f)
    return reg, alpha, bounds, start(net, f, u0)


def as_single_layer(model: nn.Module | LiftedNetwork, input_shape: Sequence[int] | None) -> LiftedNetwork:
    """The lifted network of a one-layer model ``σ(W · + b)`` (one :class:`AffineLayer`)."""
    net = lifted_network(model, input_shape)
    if len(net.layers) != 1 or not isinstance(net.layers[0], AffineLayer):
        raise ValueError(
            f"model: expected a single layer σ(Wu + b), got {len(net.layers)} lifted layers; use "
            "lifted_inverse.inversion.invert for deep networks"
        )
    return net


def prepared(model, f: torch.Tensor, alpha, regularizer, iterations: int, title: str, *,
             one_layer: bool = False, input_shape: Sequence[int] | None = None,
             u0: torch.Tensor | None = None, tol: float = 1e-6, bounds: Bounds = None,
             callbacks: Iterable[Callback] | None = None, progress: bool = False,
             time_limit: float | None = None):
    """What both inversions start from: ``(net, J, α, bounds, u0, log)``, checked.

    The keyword options are those :func:`invert_single_layer` and
    :func:`~.deep.invert_deep` share: ``input_shape`` (of ``u``, to lift an ``nn.Module``),
    ``u0`` (start, default 0), ``tol`` (stop when ``‖u_{k+1} − u_k‖ ≤ tol ‖u_k‖``), ``bounds``
    (box ``(lo, hi)``), ``callbacks`` (``cb(record) -> True`` stops), ``progress`` (tqdm),
    ``time_limit`` (seconds). ``log`` is the :class:`~.result.IterationLog` of the run.
    """
    net = as_single_layer(model, input_shape) if one_layer else lifted_network(model, input_shape)
    reg, alpha, bounds, u0 = checked_problem(net, f, alpha, regularizer, bounds, u0)
    return net, reg, alpha, bounds, u0, IterationLog(iterations, tol, callbacks, progress, time_limit, title)


def invert_single_layer(model: nn.Module | LiftedNetwork, f: torch.Tensor, alpha: float,
                        regularizer: str | Regularizer = "tv", *, iterations: int = 1000,
                        state: dict | None = None, **options) -> InversionResult:
    """``u_α ≈ argmin_u B_Ψ(f, Wu + b) + αJ(u)`` for ``f`` of shape ``(B, *out_shape)``.

    ``model``: a one-layer ``nn.Sequential`` (``[Flatten,] Linear|Conv2d, activation``) or its
    :class:`LiftedNetwork`; ``input_shape`` = ``(C, H, W)`` of ``u`` (TV) or ``(n,)``. The problem
    is the lifted inversion objective (:class:`~lifted_inverse.lifted.inverse.LiftedInversion`)
    with no hidden state, i.e. FISTA / primal–dual on ``u`` alone with step ``1/‖W‖²``. ``u0``
    (default 0) and ``state`` (a previous result's ``state``) warm-start the solver. Stops after
    ``iterations``, by ``tol``, ``time_limit`` or a callback (``options``: see :func:`prepared`).
    ``history['objective']`` is ``Σ_batch B_Ψ(f, Wy + b) + αJ(y)`` at the point ``y`` where the
    gradient is taken.
    """
    net, reg, alpha, bounds, u0, log = prepared(model, f, alpha, regularizer, iterations,
                                                "lifted inversion (1 layer)", one_layer=True, **options)
    problem = LiftedInversion(net, f, reg, alpha, u0, bounds=bounds)
    block = problem.block
    if state and "p" in state:
        block.state["p"] = state["p"].clone()
    with torch.no_grad():
        for _ in range(iterations):
            y = block.point()
            fidelity, grad = problem.input_value_and_gradient(y)
            objective = float(fidelity.sum() + alpha * reg.value(y).sum())
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



def rate_bound(activation, f: torch.Tensor, v: torch.Tensor, delta: float, alpha: float) -> torch.Tensor:
    """The theorem's bound ``2δ²/α + α‖v†‖² + (Ψ(f + αv†) + Ψ(f − αv†) − 2Ψ(f))/α`` per sample
    ``(B,)`` (``+inf`` where ``f ± αv†`` leaves ``dom Ψ``; ``f`` must lie in ``dom Ψ``)."""
    if not alpha > 0:
        raise ValueError(f"alpha: the bound needs alpha > 0, got {alpha}")
    psi = activation.psi
    curvature = psi(f + alpha * v) + psi(f - alpha * v) - 2.0 * psi(f)
    norm_sq = (v * v).flatten(1).sum(1)
    return 2.0 * delta * delta / alpha + alpha * norm_sq + curvature / alpha


@dataclass
class SourcePair:
    """A ground truth ``u`` ``(1, *input_shape)`` and a source element ``v`` ``(1, m)`` with
    ``Wᵀv ∈ ∂J(u)`` (up to ``residual``), ``v`` zero outside ``support`` (row indices)."""
    u: torch.Tensor
    v: torch.Tensor
    support: torch.Tensor
    residual: float


def source_condition_pair(model: nn.Module | LiftedNetwork, x: torch.Tensor, alpha0: float,
                          regularizer: str | Regularizer = "tv", *, quantile: float = 0.5,
                          input_shape: Sequence[int] | None = None, iterations: int = 20000,
                          tol: float = 1e-12) -> SourcePair:
    """``(u†, v†)`` satisfying the theorem's assumptions for ``N(u) = σ(Wu + b)`` (``nn.Linear``).

    ``S`` = the rows where ``z = Wx + b`` exceeds the ``quantile`` of its positive entries;
    ``g = z_S`` and

        u† = argmin_u ½‖W_S u + b_S − g‖² + α0 J(u),     v†_S = (g − W_S u† − b_S)/α0,  v† = 0 off S,

    so the optimality condition of ``u†`` reads ``Wᵀv† = W_Sᵀv†_S ∈ ∂J(u†)`` (the source
    condition), and ``v†`` vanishes where ``σ`` is at the boundary of ``dom Ψ``: ``f^δ ± αv†``
    stays in ``dom Ψ`` once ``α|v†_i| ≤ f^δ_i`` on ``S`` (check with :func:`rate_bound`).
    ``residual`` = ``‖Wᵀv† − ∂J‖/‖Wᵀv†‖`` with the solver's certified subgradient of ``J`` at
    ``u†`` (0 at the exact minimiser). ``x``: ``(1, *input_shape)``.
    """
    net = as_single_layer(model, input_shape)
    layer = net.layers[0]
    if not isinstance(layer.module, nn.Linear):
        raise TypeError(f"model: the construction needs an nn.Linear layer, got {type(layer.module).__name__}")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile: expected a value in [0, 1), got {quantile}")
    with torch.no_grad():
        z = net.output_pre_activation(x).reshape(-1)
        positive = z[z > 0]
        if positive.numel() == 0:
            raise ValueError("x: W x + b has no positive entry; no row can carry the source element")
        support = torch.nonzero(z >= torch.quantile(positive, quantile)).reshape(-1)
        weight, bias = layer.module.weight[support], layer.module.bias
        # built on the meta device, then filled: no draw from the global random generator
        rows = nn.Linear(weight.shape[1], len(support), bias=bias is not None, device="meta",
                         dtype=weight.dtype).to_empty(device=weight.device)
        rows.weight.copy_(weight)
        if bias is not None:
            rows.bias.copy_(bias[support])
        restricted = nn.Sequential(nn.Flatten(), rows) if len(net.input_shape) > 1 else nn.Sequential(rows)
        g = z[support][None]
    res = invert_single_layer(restricted, g, alpha0, regularizer, iterations=iterations, tol=tol,
                              input_shape=net.input_shape)
    with torch.no_grad():
        v = torch.zeros((1, z.numel()), dtype=z.dtype, device=z.device)
        v[0, support] = (g[0] - rows(res.u.flatten(1))[0]) / alpha0
        source = layer.linear_adjoint(v).reshape(res.u.shape)
        reg = res.state["regularizer"]
        sub = reg.subgradient(res.u, res.state, res.state["grad"], alpha0)
        residual = float(torch.linalg.vector_norm(source - sub) / torch.linalg.vector_norm(source).clamp_min(1e-300))
    if not math.isfinite(residual):
        raise ValueError("x: the source element is not finite")
    return SourcePair(u=res.u, v=v, support=support, residual=residual)
