"""Lifted Bregman inversion of deep networks (MLPs, conv encoders, ResNets), method §5.

For a chain ``N = S_L ∘ … ∘ S_1`` (:mod:`.layers`) the intermediate states become free variables
and each stage constraint a penalty; the output is tied to the data ``f^δ``:

    E(u, x, z) = Σ_{affine k}   B_Ψk(x_k, A_k x_{k−1} + b_k)
               + Σ_{residual k} [ B_Ψk(z_k, A_k x_{k−1} + b_k) + ρ/2 ‖x_k − x_{k−1} − V_k z_k − c_k‖² ]
               + α J(u),          x_0 = u,  x_L = f^δ.

This is the compact form ``λ/2‖Ku − f^δ‖² + B_Ψ(z, Wu + b) + ρ/2‖Mu − Vz‖² + J(u)`` with all
layers stacked (a residual output layer gives the ``λ = ρ`` data term, an affine one the Bregman
tie ``B_ΨL(f^δ, A_L x_{L−1} + b_L)``). ``E`` is convex in each block with the others fixed, and the
solver sweeps the blocks (block-coordinate descent), each by proximal-gradient steps with step
``1/L_block`` from power-iteration norms — gradients only ever apply ``A``, ``Aᵀ``, ``V``, ``Vᵀ``:

* ``u``:   ``∇ = A_1ᵀ(σ_1(A_1u + b_1) − y_1) [− ρ r_1]``, ``L = ‖A_1‖² [+ ρ]``; ``J`` by the TV
  primal–dual / FISTA block of :mod:`.single_layer`;
* ``x_k`` (output of an affine stage): ``x ← prox_{μF_k}(x − μ g)`` with
  ``g = −(A_k x_{k−1} + b_k) + A_{k+1}ᵀ(σ_{k+1}(A_{k+1}x + b_{k+1}) − y_{k+1}) [− ρ r_{k+1}]``,
  ``F_k = ½‖·‖² + Ψ_k``;
* ``z_k`` (residual hidden state): ``z ← prox_{μF_k}(z − μ(−(A_k x_{k−1} + b_k) − ρV_kᵀ r_k))``;
* ``x_k`` (output of a residual stage): plain gradient step on the smooth terms.

Here ``y_k`` is the Bregman "output" of stage ``k`` (``x_k`` or ``z_k``) and
``r_k = x_k − x_{k−1} − V_k z_k − c_k``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .layers import (
    AffineStage,
    ResidualStage,
    Stage,
    describe,
    forward_states,
    output_activation,
    squared_norm,
)
from .regularizers import Bounds, Regularizer, clip, make_regularizer
from .result import Callback, InversionResult, IterationLog, relative_change
from .single_layer import PrimalBlock, _check_alpha, _check_bounds, check_data, invert_single_layer


class LiftedChain:
    """States and block updates of the lifted energy ``E`` for one stage chain and data ``f``."""

    def __init__(self, stages: Sequence[Stage], f: torch.Tensor, rho: float,
                 weights: Sequence[float] | None = None):
        self.stages = list(stages)
        self.f = f
        self.rho = float(rho)
        self.L = len(self.stages)
        self.set_weights(weights)
        self.x: list[torch.Tensor | None] = [None] * (self.L + 1)   # x[0] = u, x[L] = f
        self.z: list[torch.Tensor | None] = [None] * (self.L + 1)   # residual hidden states
        self.x[self.L] = f
        self.norms_sq = [squared_norm(s.op, f) for s in self.stages]
        self.out_norms_sq = [squared_norm(s.out_op, f) if isinstance(s, ResidualStage) else 0.0
                             for s in self.stages]

    def set_weights(self, weights: Sequence[float] | None) -> None:
        """Per-stage factors ``λ_k > 0`` on the Bregman penalties (``None``: all 1)."""
        if weights is None:
            weights = [1.0] * self.L
        weights = [float(w) for w in weights]
        if len(weights) != self.L or not all(w > 0 for w in weights):
            raise ValueError(f"weights: expected {self.L} positive Bregman weights λ_k, got {weights}")
        self.weights = weights

    # ---- indices are 1-based stage numbers, k = 1..L --------------------------------------
    def stage(self, k: int) -> Stage:
        return self.stages[k - 1]

    def blocks(self) -> list[torch.Tensor]:
        """All free variables: ``u``, the hidden states ``x_k`` and residual states ``z_k``."""
        return [t for t in self.x[:self.L] + self.z if t is not None]

    def bregman_output(self, k: int) -> torch.Tensor:
        """``y_k``: the state inside ``B_Ψk(y_k, A_k x_{k−1} + b_k)``."""
        return self.z[k] if isinstance(self.stage(k), ResidualStage) else self.x[k]

    def residual(self, k: int) -> torch.Tensor:
        s = self.stage(k)
        return self.x[k] - self.x[k - 1] - s.out_op(self.z[k]) - s.out_bias

    def snapshot(self) -> tuple[list, list]:
        """The hidden blocks ``(x_1..x_{L−1}, z)`` (tensors are never modified in place)."""
        return list(self.x[1:self.L]), list(self.z)

    def restore(self, snap: tuple[list, list]) -> None:
        self.x[1:self.L] = snap[0]
        self.z = list(snap[1])

    def extrapolate(self, new: tuple[list, list], old: tuple[list, list], beta: float) -> None:
        """States ``P(s + β(s − s_old))``, ``P`` the projection onto each block's domain
        (``dom Ψ_k`` for the output of an affine stage, no constraint otherwise)."""
        xs = []
        for k, (a, b) in enumerate(zip(new[0], old[0]), start=1):
            y = a + beta * (a - b)
            s = self.stage(k)
            xs.append(s.activation.project(y) if isinstance(s, AffineStage) else y)
        zs = [None if a is None else self.stage(k).activation.project(a + beta * (a - b))
              for k, (a, b) in enumerate(zip(new[1], old[1]))]
        self.x[1:self.L] = xs
        self.z = zs

    def initialise(self, u: torch.Tensor) -> None:
        """States from a forward pass at ``u`` (the output stays tied to ``f``)."""
        x = u
        self.x[0] = u
        for k in range(1, self.L + 1):
            s = self.stage(k)
            if isinstance(s, ResidualStage):
                self.z[k] = s.activation(s.pre_activation(x))
                x = x + s.out_op(self.z[k]) + s.out_bias
            else:
                x = s(x)
            if k < self.L:
                self.x[k] = x

    def energy_terms(self) -> torch.Tensor:
        """``E − αJ(u)`` summed over the batch (a 0-d tensor)."""
        total = torch.zeros((), dtype=self.f.dtype, device=self.f.device)
        for k in range(1, self.L + 1):
            s = self.stage(k)
            breg = s.activation.bregman(self.bregman_output(k), s.pre_activation(self.x[k - 1])).sum()
            total = total + self.weights[k - 1] * breg
            if isinstance(s, ResidualStage):
                total = total + 0.5 * self.rho * (self.residual(k) ** 2).sum()
        return total

    # ---- gradients of the smooth coupling terms w.r.t. an input state x_{k−1} --------------
    def consumer_gradient(self, k: int, x_prev: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Gradient and Lipschitz constant of stage ``k``'s terms w.r.t. its input ``x_{k−1}``."""
        s = self.stage(k)
        w = self.weights[k - 1]
        grad = w * s.op.adjoint(s.activation(s.pre_activation(x_prev)) - self.bregman_output(k))
        lip = w * self.norms_sq[k - 1]
        if isinstance(s, ResidualStage):
            r = self.x[k] - x_prev - s.out_op(self.z[k]) - s.out_bias
            grad = grad - self.rho * r
            lip += self.rho
        return grad, lip

    def update_state(self, k: int, steps: int) -> None:
        """``steps`` proximal-gradient steps on ``x_k`` (1 ≤ k < L)."""
        s = self.stage(k)
        for _ in range(steps):
            x = self.x[k]
            grad, lip = self.consumer_gradient(k + 1, x)
            if isinstance(s, AffineStage):
                # block λ_k(F_k(x) − ⟨x, A_k x_{k−1} + b_k⟩) + rest: prox of μF_k with μ = λ_k/L_rest
                w = self.weights[k - 1]
                grad = grad - w * s.pre_activation(self.x[k - 1])
                mu = w / lip
                self.x[k] = s.activation.prox_F(x - (mu / w) * grad, mu)
            else:
                self.x[k] = x  # residual() reads x[k]
                grad = grad + self.rho * self.residual(k)
                self.x[k] = x - grad / (lip + self.rho)

    def update_hidden(self, k: int, steps: int) -> None:
        """``steps`` proximal-gradient steps on the residual hidden state ``z_k``."""
        s = self.stage(k)
        w = self.weights[k - 1]
        lip = self.rho * self.out_norms_sq[k - 1]
        mu = w / max(lip, 1e-12)
        target = s.pre_activation(self.x[k - 1])
        for _ in range(steps):
            grad = -w * target - self.rho * s.out_op.adjoint(self.residual(k))
            self.z[k] = s.activation.prox_F(self.z[k] - (mu / w) * grad, mu)


def invert_deep(
    model: nn.Module | Sequence[Stage],
    f: torch.Tensor,
    alpha: float,
    regularizer: str | Regularizer = "tv",
    *,
    input_shape: Sequence[int] | None = None,
    u0: torch.Tensor | None = None,
    iterations: int = 300,
    inner_u: int = 5,
    inner_states: int = 2,
    rho: float = 1.0,
    weights: Sequence[float] | Callable[[int], Sequence[float]] | None = None,
    tol: float = 1e-6,
    bounds: Bounds = None,
    callbacks: Iterable[Callback] | None = None,
    progress: bool = False,
    time_limit: float | None = None,
    accelerate: bool = False,
) -> InversionResult:
    """Minimise the lifted energy ``E`` (module docstring) by block-coordinate sweeps.

    ``iterations`` counts sweeps; each sweep does ``inner_u`` steps on ``u`` (TV: primal–dual),
    then, in network order, ``inner_states`` steps on every hidden block. ``rho`` weights the
    residual couplings (and a residual output's data term); ``weights`` (default all 1) are
    per-stage factors ``λ_k`` on the Bregman penalties (large inner weights move the lifted
    minimiser towards exact network consistency), or a callable ``sweep ↦ weights`` for a
    continuation schedule (see :func:`continuation`). ``history['objective']`` is ``E`` after
    each sweep, ``history['change']`` the relative change of all blocks (the ``tol`` test);
    ``state`` holds the lifted states ``x``, ``z`` and the TV dual.

    ``accelerate=True`` extrapolates all blocks between sweeps (inertial BCD),
    ``X̂ = P(X_k + β_k(X_k − X_{k−1}))`` with the FISTA sequence ``β_k = (t_k − 1)/t_{k+1}`` and
    ``P`` the projection onto the box / activation domains; a sweep from ``X̂`` is kept only if
    ``E`` does not increase over ``E(X_k)`` (at the current weights), otherwise the momentum is
    restarted and a plain sweep is done from ``X_k`` (one extra energy evaluation per sweep).
    """
    stages = _stages(model, input_shape)
    reg = make_regularizer(regularizer)
    alpha = _check_alpha(alpha)
    bounds = _check_bounds(bounds)
    if not rho > 0:
        raise ValueError(f"rho: expected a positive coupling weight, got {rho}")
    for name, value in (("inner_u", inner_u), ("inner_states", inner_states)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    in_shape = stages[0].in_shape
    last = stages[-1]
    check_data(f, last.out_shape, output_activation(last))
    reg.check(in_shape)
    if stages[0].bias.dtype != f.dtype or stages[0].bias.device != f.device:
        raise TypeError(
            f"f: dtype/device {f.dtype}/{f.device} differ from the model's {stages[0].bias.dtype}/"
            f"{stages[0].bias.device}; move the model with model.to(f)"
        )
    if u0 is None:
        u0 = torch.zeros((f.shape[0], *in_shape), dtype=f.dtype, device=f.device)
    elif tuple(u0.shape) != (f.shape[0], *in_shape):
        raise ValueError(f"u0: expected shape {(f.shape[0], *in_shape)}, got {tuple(u0.shape)}")

    log = IterationLog(iterations, tol, callbacks, progress, time_limit, "lifted inversion (deep)")
    with torch.no_grad():
        schedule = weights if callable(weights) else None
        chain = LiftedChain(stages, f, rho, schedule(0) if schedule else weights)
        chain.initialise(u0.detach().clone())
        _, lip_u = chain.consumer_gradient(1, chain.x[0])
        block = PrimalBlock(chain.x[0], reg, alpha, lip_u, bounds)
        chain.x[0] = block.u

        def energy() -> float:
            return float(chain.energy_terms() + alpha * reg.value(block.u).sum())

        def sweep_once() -> None:
            block.reset_momentum()
            for _ in range(inner_u):
                grad, _ = chain.consumer_gradient(1, block.point())
                block.step(grad)
            chain.x[0] = block.u
            for k in range(1, chain.L):
                if isinstance(chain.stage(k), ResidualStage):
                    chain.update_hidden(k, inner_states)
                chain.update_state(k, inner_states)
            if isinstance(chain.stage(chain.L), ResidualStage):
                chain.update_hidden(chain.L, inner_states)

        def save() -> tuple:
            return block.u, dict(block.state), chain.snapshot()

        def load(saved: tuple) -> None:
            block.u, chain.x[0] = saved[0], saved[0]
            block.state.clear()
            block.state.update(saved[1])
            chain.restore(saved[2])

        previous, t = None, 1.0  # accelerate: the accepted iterate before the current one
        objective = None
        for sweep in range(iterations):
            if schedule is not None and sweep > 0:
                objective = None  # E of the current iterate changes with the weights
                chain.set_weights(schedule(sweep))
                block.set_lipschitz(chain.consumer_gradient(1, block.u)[1])
            u_old = block.u
            old = chain.blocks()
            if not accelerate:
                sweep_once()
                objective = energy()
            else:
                current = save()
                e_current = energy() if objective is None else objective  # E at this sweep's weights
                t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
                beta = (t - 1.0) / t_new
                if previous is not None and beta > 0:
                    block.u = clip(current[0] + beta * (current[0] - previous[0]), bounds)
                    chain.x[0] = block.u
                    chain.extrapolate(current[2], previous[2], beta)
                sweep_once()
                objective = energy()
                if objective > e_current and previous is not None and beta > 0:
                    # restart: the extrapolated sweep went uphill - redo a plain sweep from the
                    # accepted iterate (plain sweeps decrease E up to the inexact TV prox)
                    load(current)
                    t_new = 1.0
                    sweep_once()
                    objective = energy()
                previous, t = current, t_new
            change = relative_change(chain.blocks(), old)
            if log.record(block.u, u_old, objective, change=change):
                break
    seconds = log.close()
    return InversionResult(
        u=block.u, alpha=alpha, iterations=log.count, converged=log.converged, seconds=seconds,
        method=f"lifted-bregman-bcd/{reg.name}", history=log.history,
        state={**block.state, "grad": block.last_grad, "regularizer": reg,
               "x": chain.x[1:chain.L], "z": [z for z in chain.z if z is not None]},
    )


def _stages(model, input_shape) -> list[Stage]:
    if isinstance(model, (list, tuple)) and all(isinstance(s, (AffineStage, ResidualStage)) for s in model):
        if not model:
            raise ValueError("model: empty stage list")
        return list(model)
    if input_shape is None:
        raise ValueError("input_shape: required to describe an nn.Module, e.g. (1, 28, 28)")
    return describe(model, input_shape)


def continuation(stages: int, final: float = 10.0, sweeps: int = 200, start: float = 1.0
                 ) -> Callable[[int], list[float]]:
    """Weights ``λ_k(t) = start·(final/start)^{min(t/sweeps, 1)}`` on the hidden stages ``k < L``
    (the output tie keeps weight 1): loose constraints first for fast progress, then a geometric
    tightening towards the network (a MAC-style homotopy)."""
    if stages < 1 or not final > 0 or not start > 0 or sweeps < 1:
        raise ValueError("continuation: expected stages ≥ 1, positive start/final and sweeps ≥ 1")

    def schedule(t: int) -> list[float]:
        w = start * (final / start) ** min(t / sweeps, 1.0)
        return [w] * (stages - 1) + [1.0]

    return schedule


_DEEP_ONLY = ("inner_u", "inner_states", "rho", "weights", "accelerate")


def invert(model, f, alpha, regularizer="tv", **kwargs) -> InversionResult:
    """Lifted Bregman inversion of any describable model: one affine layer goes to
    :func:`invert_single_layer` (``iterations`` = primal–dual steps; the deep-only keywords
    ``inner_u``, ``inner_states``, ``rho`` are ignored), several stages to :func:`invert_deep`."""
    stages = _stages(model, kwargs.pop("input_shape", None))
    if len(stages) == 1 and isinstance(stages[0], AffineStage):
        for key in _DEEP_ONLY:
            kwargs.pop(key, None)
        return invert_single_layer(stages[0], f, alpha, regularizer, **kwargs)
    return invert_deep(stages, f, alpha, regularizer, **kwargs)


def network_output(model, u: torch.Tensor, input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """``N(u)`` through the stage description (no autograd)."""
    with torch.no_grad():
        return forward_states(_stages(model, input_shape or tuple(u.shape[1:])), u)
