"""Inversion of a trained network: the lifted objective with the input free (method §5).

For a :class:`~lifted_inverse.lifted.model.LiftedNetwork` with frozen weights and data ``f``:

    E(u, X) = Σ_l P_l(x^{out(l)}, z_l(x^{in(l)})) + α J(u),     x^0 = u (free),  x^L = f (fixed),

the penalties ``P_l`` those of :class:`~lifted_inverse.lifted.objective.LiftedObjective` with
method ``'bregman'``: ``λ_l B_Ψl(x^l, W_l x^{l−1} + b_l)`` on affine layers (the inner layer of a
residual block included), ``ρ/2‖u_j − u_{j−1} − V h_j − c‖²`` on skip layers. The output tie is
``λ_L B_ΨL(f, W_L x^{L−1} + b_L)`` for an affine output layer and ``ρ/2‖f − u_{L−1} − V h − c‖²``
for a residual one. ``λ`` is given per model-level block (``net.blocks``); ``E`` is convex in
each block with the others fixed. One sweep (block-coordinate descent):

* ``u`` (shape ``(B, *net.input_shape)``): ``input_steps`` proximal-gradient steps
  ``u ← step_J(u, ∇_u Σ_c P_c, 1/L_u)`` on the smooth terms of the layers ``c`` reading ``x^0``,
  ``∇_u = Σ_c A_{c,k}ᵀ ∇_z P_c``, ``L_u = Σ_c L_z(P_c)‖A_{c,k}‖²``, and ``αJ`` (plus the box
  ``[lo, hi]``) by the regulariser's own step (its prox, or a primal–dual step);
* hidden states: the training engine's state blocks,
  :meth:`~lifted_inverse.lifted.solvers.LiftedSolver.update_state` (``state_steps``
  proximal-gradient steps per state), one state at a time from the input side (Gauss–Seidel: the
  change of ``u`` reaches the last hidden state within the sweep).

``J`` is any object with the regulariser interface ``value(u) -> (B,)``, ``init_state(u) -> dict``,
``step(u, grad, tau, lipschitz, alpha, state, bounds) -> u⁺`` (one forward–backward or
primal–dual step with ``tau ≤ 1/lipschitz``) and ``forward_backward`` (whether FISTA
extrapolation applies to ``step``).

Inertial sweeps (:meth:`LiftedInversion.iterate` with ``accelerate=True``) extrapolate all blocks,
``X̂ = P(X_k + β_k(X_k − X_{k−1}))`` with the FISTA ``β_k = (t_k − 1)/t_{k+1}`` and ``P`` the
projection onto the box (``u``) and onto ``dom Ψ`` of each state's producer; the sweep from ``X̂``
is kept only if ``E`` does not exceed ``E(X_k)``, otherwise the momentum restarts and a plain
sweep is done from ``X_k``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import LiftedNetwork, ResidualView
from .objective import LiftedObjective
from .solvers import LiftedSolver

Bounds = tuple[float | None, float | None] | None


def project_box(u: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """Projection onto ``{lo ≤ u ≤ hi}`` (either side may be ``None``)."""
    if bounds is None or (bounds[0] is None and bounds[1] is None):
        return u
    return u.clamp(bounds[0], bounds[1])


class InputBlock:
    """Minimises ``g(u) + αJ(u) + ι_box(u)`` one step at a time, given ``∇g`` with Lipschitz ``L``.

    FISTA extrapolation with adaptive restart (``⟨y − u⁺, u⁺ − u⟩ > 0``) when ``J``'s step is a
    forward–backward step, plain steps otherwise (e.g. primal–dual TV steps). ``point()`` is where the
    caller evaluates ``∇g``; ``state`` is the regulariser's (e.g. the TV dual).
    """

    def __init__(self, u0: torch.Tensor, regularizer, alpha: float, lipschitz: float,
                 bounds: Bounds = None, accelerate: bool = True):
        self.reg, self.alpha, self.bounds = regularizer, float(alpha), bounds
        self.set_lipschitz(lipschitz)
        self.u = project_box(u0, bounds)
        self.y = self.u
        self.t = 1.0
        self.accelerate = accelerate and regularizer.forward_backward
        self.state = regularizer.init_state(self.u)
        self.last_grad = torch.zeros_like(self.u)

    def set_lipschitz(self, lipschitz: float) -> None:
        if not lipschitz > 0:
            raise ValueError(f"lipschitz: expected a positive constant, got {lipschitz}")
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

    def reset(self, u: torch.Tensor | None = None) -> None:
        """Drop the momentum (and move to ``u`` when given)."""
        if u is not None:
            self.u = u
        self.y, self.t = self.u, 1.0


def layer_weights(net: LiftedNetwork, weights: Sequence[float] | None, rho: float
                  ) -> tuple[list[float], float]:
    """Block weights ``λ`` (one per ``net.blocks``, default all 1) as the
    :class:`LiftedObjective` options ``(lam per lifted layer, loss_weight)``: a block's ``λ`` goes
    to its affine layer (a residual block's inner layer; coupling layers are weighted by ρ), the
    output tie gets ``λ_L`` (affine output layer) or ``ρ`` (coupling output layer)."""
    n = len(net.blocks)
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n or not all(w > 0 for w in weights):
        raise ValueError(f"weights: expected {n} positive Bregman weights λ (one per block), got {weights}")
    lam = [1.0] * len(net.layers)
    for block, w in zip(net.blocks, weights):
        lam[(block.inner if isinstance(block, ResidualView) else block).index] = w
    out = net.output_layer
    return lam, (rho if out.coupling else lam[out.index])


class LiftedInversion:
    """Blocks, block updates and energy of the lifted inversion problem (module docstring).

    Args:
        net: the lifted network (its weights are not changed).
        f: data ``(B, *net.state_shapes[-1])``, the fixed last state.
        regularizer: ``J`` (interface in the module docstring); ``alpha`` its weight ``≥ 0``.
        u0: start ``(B, *net.input_shape)``; the hidden states start at its forward pass.
        weights: ``λ`` per block of ``net.blocks`` (default all 1); ``rho``: residual coupling ρ.
        bounds: box ``(lo, hi)`` for ``u`` (either may be None).
        input_steps, state_steps: proximal-gradient steps on ``u`` / on each state per sweep.
    """

    def __init__(self, net: LiftedNetwork, f: torch.Tensor, regularizer, alpha: float,
                 u0: torch.Tensor, *, weights: Sequence[float] | None = None, rho: float = 1.0,
                 bounds: Bounds = None, input_steps: int = 1, state_steps: int = 1):
        for name, value in (("input_steps", input_steps), ("state_steps", state_steps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if tuple(f.shape[1:]) != net.state_shapes[-1]:
            raise ValueError(f"f: expected shape (B, {', '.join(map(str, net.state_shapes[-1]))}), "
                             f"got {tuple(f.shape)}")
        if tuple(u0.shape) != (f.shape[0], *net.input_shape):
            raise ValueError(f"u0: expected shape {(f.shape[0], *net.input_shape)}, got {tuple(u0.shape)}")
        self.net, self.f = net, f
        self.reg, self.alpha = regularizer, float(alpha)
        self.input_steps = input_steps
        if not rho > 0:
            raise ValueError(f"rho: expected a positive coupling weight, got {rho}")
        if net.n_inputs != 1:
            raise ValueError("net: inversion needs the model input as the only fixed input state")
        lam, loss_weight = layer_weights(net, weights, rho)
        self.objective = LiftedObjective(net, "bregman", lam=lam, rho=rho, loss_weight=loss_weight)
        self.engine = LiftedSolver(self.objective, "bcd", state_steps=state_steps)
        with torch.no_grad():
            self.states = net.forward_states(u0)
        self.states[-1] = f
        self.block = InputBlock(u0, regularizer, alpha, self.input_lipschitz(), bounds)
        self.states[0] = self._state0(self.block.u)
        self._previous = None      # the accepted iterate before the current one (inertial sweeps)
        self._t = 1.0
        self._energy: float | None = None   # E at the current iterate and weights

    # ---- blocks ------------------------------------------------------------------------------
    @property
    def u(self) -> torch.Tensor:
        return self.block.u

    @property
    def hidden(self) -> list[torch.Tensor]:
        """The free states ``x^1 … x^{L−1}`` (residual hidden states included), in state order."""
        return [self.states[s] for s in self.net.free_states]

    def blocks(self) -> list[torch.Tensor]:
        """All free variables: ``u`` and the hidden states."""
        return [self.block.u, *self.hidden]

    def _state0(self, u: torch.Tensor) -> torch.Tensor:
        return u.reshape(u.shape[0], *self.net.state_shapes[0])

    def set_weights(self, weights: Sequence[float] | None) -> None:
        """New block weights ``λ`` (continuation): penalties and the ``u`` step follow."""
        obj = self.objective
        obj.lam, obj.loss_weight = layer_weights(self.net, weights, obj.rho)
        obj.set_epoch(obj.epoch)
        self.block.set_lipschitz(self.input_lipschitz())
        self._energy = None

    # ---- the u-block -------------------------------------------------------------------------
    def input_lipschitz(self) -> float:
        """``L_u = Σ_c L_z(P_c)‖A_{c,k}‖²`` over the layers ``c`` reading ``x^0`` as input ``k``."""
        pens = self.objective.penalties
        return sum(pens[c.index].lipschitz_z(c.activation) * c.input_lipschitz(k)
                   for c, k in self.net.consumers[0])

    def _input_terms(self, u: torch.Tensor, with_value: bool):
        x0 = self._state0(u)
        pens, states = self.objective.penalties, self.states
        grad, value = None, None
        for c, k in self.net.consumers[0]:
            z = c.pre_activation([x0 if s == 0 else states[s] for s in c.inputs])
            if with_value:
                v, r = pens[c.index].value_and_grad_z(c.activation, states[c.output], z)
                value = v if value is None else value + v
            else:
                r = pens[c.index].grad_z(c.activation, states[c.output], z)
            g = c.input_adjoint(k, r)
            grad = g if grad is None else grad + g
        return grad.reshape(u.shape), value

    @torch.no_grad()
    def input_gradient(self, u: torch.Tensor) -> torch.Tensor:
        """``∇_u Σ_c P_c`` at ``u`` (the other blocks fixed), shape of ``u``."""
        return self._input_terms(u, False)[0]

    @torch.no_grad()
    def input_value_and_gradient(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Σ_c P_c per sample (B,), ∇_u Σ_c P_c)`` at ``u``; one ``σ(z)`` per layer."""
        grad, value = self._input_terms(u, True)
        return value, grad

    # ---- sweeps ------------------------------------------------------------------------------
    @torch.no_grad()
    def sweep(self) -> None:
        """``input_steps`` steps on ``u``, then the state blocks. Without hidden states the
        ``u``-block is the whole problem and its FISTA momentum carries over between sweeps."""
        block = self.block
        if self.net.free_states:
            block.reset()
        for _ in range(self.input_steps):
            block.step(self.input_gradient(block.point()))
        self.states[0] = self._state0(block.u)
        cache: dict = {}
        for s in self.net.free_states:   # Gauss–Seidel from the input side, as u was just updated
            self.engine.update_state(self.states, s, cache)

    @torch.no_grad()
    def energy(self) -> float:
        """``E(u, X)`` summed over the batch."""
        data = self.objective.energy(self.states).sum()
        return float(data + self.alpha * self.reg.value(self.block.u).sum())

    def _save(self) -> tuple:
        # update_states and the regulariser's step rebind tensors, never write into them
        return self.block.u, dict(self.block.state), self.hidden

    def _load(self, saved: tuple) -> None:
        self.block.reset(saved[0])
        self.block.state.clear()
        self.block.state.update(saved[1])
        self.states[0] = self._state0(saved[0])
        for s, x in zip(self.net.free_states, saved[2]):
            self.states[s] = x

    def _extrapolate(self, new: tuple, old: tuple, beta: float) -> None:
        """Blocks ``P(X + β(X − X_old))`` (box for ``u``, ``dom Ψ`` of each state's producer)."""
        u = project_box(new[0] + beta * (new[0] - old[0]), self.block.bounds)
        self.block.reset(u)
        self.states[0] = self._state0(u)
        for s, a, b in zip(self.net.free_states, new[2], old[2]):
            self.states[s] = self.net.producer[s].activation.project(a + beta * (a - b))

    @torch.no_grad()
    def iterate(self, accelerate: bool = False) -> float:
        """One sweep, inertial when ``accelerate`` (module docstring); returns ``E`` after it.

        Without hidden states ``accelerate`` changes nothing: the ``u``-block is FISTA already.
        """
        if not accelerate or not self.net.free_states:
            self.sweep()
            self._energy = self.energy()
            return self._energy
        current = self._save()
        e_current = self.energy() if self._energy is None else self._energy
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * self._t * self._t) ** 0.5)
        beta = (self._t - 1.0) / t_new
        extrapolated = self._previous is not None and beta > 0
        if extrapolated:
            self._extrapolate(current, self._previous, beta)
        self.sweep()
        energy = self.energy()
        if extrapolated and energy > e_current:
            # restart: the extrapolated sweep went uphill; a plain sweep from the accepted iterate
            # decreases E (up to an inexact prox of J)
            self._load(current)
            t_new = 1.0
            self.sweep()
            energy = self.energy()
        self._previous, self._t, self._energy = current, t_new, energy
        return energy
