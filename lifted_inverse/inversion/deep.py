"""Lifted Bregman inversion of deep networks (MLPs, conv encoders, ResNets), method §5.

A thin layer over the lifted engine: the model is lifted (:func:`~lifted_inverse.lifted.model.lift`),
the problem is :class:`~lifted_inverse.lifted.inverse.LiftedInversion`,

    E(u, X) = Σ_l P_l(x^{out(l)}, z_l(x^{in(l)})) + α J(u),     x^0 = u,  x^L = f^δ,

(lifted Bregman penalties with weights ``λ`` per block, ``ρ/2`` residual couplings, weights frozen)
and this module adds argument checks, the regulariser, continuation of ``λ``, stopping rules,
callbacks and the :class:`~.result.InversionResult`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..lifted.inverse import LiftedInversion
from ..lifted.model import LiftedNetwork
from .regularizers import Regularizer
from .result import InversionResult, relative_change
from .single_layer import invert_single_layer, lifted_network, prepared


def invert_deep(model: nn.Module | LiftedNetwork, f: torch.Tensor, alpha: float,
                regularizer: str | Regularizer = "tv", *, iterations: int = 300, inner_u: int = 5,
                inner_states: int = 2, rho: float = 1.0,
                weights: Sequence[float] | Callable[[int], Sequence[float]] | None = None,
                accelerate: bool = False, **options) -> InversionResult:
    """Minimise the lifted energy ``E`` (module docstring) by block-coordinate sweeps.

    ``model``: an ``nn.Module`` with ``input_shape``, or its :class:`LiftedNetwork`.
    ``iterations`` counts sweeps; each sweep does ``inner_u`` steps on ``u``, then
    ``inner_states`` steps on every hidden state. ``rho`` weights the residual couplings (and a
    residual output's data term); ``weights`` (default all 1) are per-block factors ``λ`` on the
    Bregman penalties, one per entry of ``net.blocks`` (large inner weights move the lifted
    minimiser towards exact network consistency), or a callable ``sweep ↦ weights`` for a
    continuation schedule (see :func:`continuation`). ``accelerate=True``: inertial sweeps with
    restart (:meth:`LiftedInversion.iterate`). ``options``: ``input_shape``, ``u0``, ``tol``,
    ``bounds``, ``callbacks``, ``progress``, ``time_limit`` (:func:`~.single_layer.prepared`).
    ``history['objective']`` is ``E`` after each sweep, ``history['change']`` the relative change
    of all blocks (the ``tol`` test); ``state`` holds the hidden lifted states ``x`` (state order)
    and the regulariser's state (TV dual ``p``).
    """
    net, reg, alpha, bounds, u0, log = prepared(model, f, alpha, regularizer, iterations,
                                                "lifted inversion (deep)", **options)
    schedule = weights if callable(weights) else None
    with torch.no_grad():
        problem = LiftedInversion(net, f, reg, alpha, u0, rho=rho,
                                  weights=schedule(0) if schedule else weights, bounds=bounds,
                                  input_steps=inner_u, state_steps=inner_states)
        for sweep in range(iterations):
            if schedule is not None and sweep > 0:
                problem.set_weights(schedule(sweep))
            u_old, old = problem.u, problem.blocks()
            objective = problem.iterate(accelerate)
            if log.record(problem.u, u_old, objective, change=relative_change(problem.blocks(), old)):
                break
    seconds = log.close()
    block = problem.block
    return InversionResult(
        u=block.u, alpha=alpha, iterations=log.count, converged=log.converged, seconds=seconds,
        method=f"lifted-bregman-bcd/{reg.name}", history=log.history,
        state={**block.state, "grad": block.last_grad, "regularizer": reg, "x": problem.hidden},
    )


def continuation(stages: int, final: float = 10.0, sweeps: int = 200, start: float = 1.0
                 ) -> Callable[[int], list[float]]:
    """Weights ``λ_k(t) = start·(final/start)^{min(t/sweeps, 1)}`` on the hidden blocks ``k < L``
    (``stages = L`` blocks; the output tie keeps weight 1): loose constraints first for fast
    progress, then a geometric tightening towards the network (a MAC-style homotopy)."""
    if stages < 1 or not final > 0 or not start > 0 or sweeps < 1:
        raise ValueError("continuation: expected stages ≥ 1, positive start/final and sweeps ≥ 1")

    def schedule(t: int) -> list[float]:
        w = start * (final / start) ** min(t / sweeps, 1.0)
        return [w] * (stages - 1) + [1.0]

    return schedule


_DEEP_ONLY = ("inner_u", "inner_states", "rho", "weights", "accelerate")


def invert(model, f, alpha, regularizer="tv", **kwargs) -> InversionResult:
    """Lifted Bregman inversion of any liftable model (an ``nn.Module`` with ``input_shape``, or
    a :class:`LiftedNetwork`): one affine layer goes to :func:`invert_single_layer`
    (``iterations`` = FISTA / primal–dual steps; the deep-only keywords ``inner_u``,
    ``inner_states``, ``rho``, ``weights``, ``accelerate`` are ignored), deeper ones to
    :func:`invert_deep`."""
    net = lifted_network(model, kwargs.pop("input_shape", None))
    if len(net.layers) == 1:
        for key in _DEEP_ONLY:
            kwargs.pop(key, None)
        return invert_single_layer(net, f, alpha, regularizer, **kwargs)
    return invert_deep(net, f, alpha, regularizer, **kwargs)


def network_output(model, u: torch.Tensor, input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """``N(u)`` through the lifted network (no autograd)."""
    return lifted_network(model, input_shape or tuple(u.shape[1:])).forward_states(u)[-1]
