"""Lifted Bregman training of the PNN and of unrolled proximal networks (method §2–§4).

Network (see :mod:`lifted_inverse.networks.unrolled`), layers ``k = 1..K``:
``v_k = x_{k−1} − γA*(Ax_{k−1} − y)`` (PNN: ``v_k = z``), ``p_k = u_{k−1} − τ_k L_k(L_k* u_{k−1} − v_k)``,
``u_k = clip_λ(p_k)``, ``q_k = v_k − L_k* u_k``, ``x_k = q_k``, output ``x_K``.

Lifted objective (per sample, averaged over the batch) with free states ``u_1..u_K`` and, when
there is an operator, ``x_1..x_{K−1}``:

    E = Σ_k B_clip(u_k, p_k) + Σ_{k<K} ρ/2‖x_k − q_k‖² + w/2‖q_K − x†‖²

``B_clip(y, p) = F(y) + F*(p) − ⟨y, p⟩`` with ``F = ½‖·‖² + ι_[−λ,λ]``
(:class:`~lifted_inverse.lifted.activations.Clip`); the PNN has no x-states
(``x_k`` does not enter ``v_{k+1} = z``).

Blocks (each a descent step on E, so a BCD sweep never increases E):

* ``u_k``: ``E = F(u_k) + S(u_k)`` with ``S`` smooth (``F*(p_k) − ⟨u_k, p_k⟩``, the ρ/w term through
  ``q_k``, and ``B_clip(u_{k+1}, p_{k+1})`` through ``p_{k+1} = M_{k+1}u_k + …``,
  ``M = I − τ L L*``). ``∇S`` is Lipschitz with ``ℓ_u ≤ c_k ‖L_k‖² + ‖M_{k+1}‖²`` and
  ``‖M‖ ≤ 1`` because ``τ‖L‖² < 2``; the step is ``u ← prox_{F/ℓ_u}(u − ∇S/ℓ_u)``
  (``Clip.prox_F``). Convex block.
* ``x_k``: smooth convex quadratic-plus-``F*`` block, gradient step ``1/ℓ_x`` with
  ``ℓ_x ≤ ρ + (τ_{k+1}‖L_{k+1}‖)² + c_{k+1}`` (``‖I − γA*A‖ ≤ 1``).
* ``L_k``: not convex (``p_k`` is quadratic in ``L_k``); proximal-gradient steps with
  backtracking (sufficient decrease ``f(W⁺) ≤ f(W) − s/4‖∇f‖²``, halving ``s``), where ``f`` is
  the layer's own term (``τ_k`` re-estimated from the candidate's power-iterated norm inside
  the test, so the step size refresh cannot increase E) plus, for ISGM, ``(1/2η)‖W − W^k‖²``.
  Layers are independent given the states (with tied weights one block for all).

Every block gradient is a closed form of the block's *local* terms (state blocks: a few
convolutions; ``L_k``: three convolution weight gradients, :meth:`LiftedUnrolledSolver.layer_value_and_grad`,
tested against autograd): nothing is back-propagated through the network. A batch keeps each layer's
data step ``v_k`` and pre-activation ``p_k`` until their inputs change, so the forward pass's
``p_k`` serve the backward sweep.

Solvers: ``'bcd'`` (full batch, persistent states, sweeps = states backward k = K..1, then all
weights) and ``'isgm'`` (per mini-batch: states from a forward pass of the current weights, then
``inner_sweeps`` BCD sweeps of the proximally regularised objective, method §3); ``'adam'``
is ISGM's schedule with Adam on the local W-block gradients instead of backtracked steps
(method §2, "Adam on the local block gradients of the W-blocks while x-blocks keep proximal
steps"); its weight steps are not monotone in E.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..lifted.activations import Clip
from ..networks.conv_pair import weight_gradient
from ..networks.pnn import ProximalLayers
from ..networks.unrolled import data_step_size, gradient_step, initial_estimate
from ..operators.base import LinearOperator

SOLVERS = ("bcd", "isgm", "adam")


@dataclass
class LiftedConfig:
    """Options of lifted training (see the module docstring for the symbols).

    ``rho``: weight of the identity penalties on x-states; ``loss_weight``: ``w``;
    ``inner_sweeps``: BCD sweeps per mini-batch (ISGM) or per call (BCD); ``state_steps``:
    prox-gradient steps per state block in a sweep; ``state_lr``: their step ``state_lr/ℓ`` with
    ``0 < state_lr < 2`` (a proximal-gradient step below ``2/ℓ`` decreases the block's objective); ``weight_steps``: backtracking steps per
    weight block in a sweep; ``prox_weight``: ``1/η`` of ISGM's proximal term; ``lr``: initial
    trial step of the weight blocks (adapted: ×``grow`` after an accepted step, ×½ per rejection).
    """

    solver: str = "isgm"
    rho: float = 1.0
    loss_weight: float = 1.0
    inner_sweeps: int = 1
    state_steps: int = 1
    state_lr: float = 1.0
    weight_steps: int = 1
    prox_weight: float = 0.0
    lr: float = 1e-2
    adam_betas: tuple = (0.9, 0.999)
    grow: float = 2.0
    max_backtracks: int = 10
    norm_iterations: int = 2

    def validate(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS} for lifted training, got {self.solver!r}")
        for name in ("rho", "loss_weight", "lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name}: expected a positive number, got {v}")
        if not 0 < self.state_lr < 2:
            raise ValueError(f"state_lr: expected 0 < state_lr < 2 (a step below 2/ℓ), got {self.state_lr}")
        if not self.prox_weight >= 0:
            raise ValueError(f"prox_weight: expected >= 0, got {self.prox_weight}")
        if not self.grow >= 1:
            raise ValueError(f"grow: expected >= 1, got {self.grow}")
        for name in ("inner_sweeps", "state_steps", "weight_steps", "max_backtracks", "norm_iterations"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v}")

    def as_json(self) -> dict:
        return asdict(self)


class LiftedBatch:
    """One batch of the lifted problem: measurements ``y`` (B, *A.out_shape) (PNN: noisy images
    ``z``), targets ``x†`` (B, C, H, W), the operator (None for the PNN) and the states.

    ``u[k]`` is ``u_{k+1}`` (k = 0..K−1); ``x[k]`` is ``x_{k+1}`` (k = 0..K−2, unrolled only)."""

    def __init__(self, prox: ProximalLayers, y: torch.Tensor, target: torch.Tensor,
                 A: LinearOperator | None = None, data_step: float = 1.0,
                 x0: torch.Tensor | None = None):
        if A is not None and not isinstance(A, LinearOperator):
            raise TypeError(f"A: expected a LinearOperator or None, got {type(A).__name__}")
        if target.ndim != 4:
            raise ValueError(f"target: expected (B, C, H, W), got shape {tuple(target.shape)}")
        if y.shape[0] != target.shape[0]:
            raise ValueError(f"y, target: batch sizes differ ({y.shape[0]} vs {target.shape[0]})")
        if A is None and y.shape != target.shape:
            raise ValueError(f"y: expected the target's shape {tuple(target.shape)}, got {tuple(y.shape)}")
        self.prox, self.y, self.target, self.A = prox, y, target, A
        self.K = prox.n_layers
        if A is None:
            self.x0, self.gamma = None, None
        else:
            if x0 is None:
                with torch.no_grad():
                    x0 = initial_estimate(A, y)
            self.x0 = x0
            self.gamma = data_step_size(A, data_step, y)
        self.u: list[torch.Tensor] = []
        self.x: list[torch.Tensor] = []
        self._v_cache: dict[int, tuple] = {}
        self._p_cache: dict[int, tuple] = {}
        self._u0: torch.Tensor | None = None      # u_0 = 0, one tensor (so p_1 can be cached)

    @property
    def has_x(self) -> bool:
        return self.A is not None

    # ---- layer quantities ------------------------------------------------------------------
    def x_in(self, k: int) -> torch.Tensor | None:
        """``x_k`` feeding layer k+1 (0-based layer index k): ``x_0`` or a state."""
        if not self.has_x:
            return None
        return self.x0 if k == 0 else self.x[k - 1]

    def v(self, k: int, x_prev: torch.Tensor | None = None) -> torch.Tensor:
        """``v_{k+1} = x_k − γA*(Ax_k − y)`` of the stored state (cached until ``x_k`` is replaced:
        a sweep asks for each ``v`` several times, and each costs an ``A`` and an ``A*``) or of
        ``x_prev``."""
        if not self.has_x:
            return self.y
        if x_prev is not None:
            return gradient_step(self.A, x_prev, self.y, self.gamma)
        x_prev = self.x_in(k)
        cached = self._v_cache.get(k)
        if cached is None or cached[0] is not x_prev:
            cached = (x_prev, gradient_step(self.A, x_prev, self.y, self.gamma))
            self._v_cache[k] = cached
        return cached[1]

    def p(self, k: int, u_prev: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``p_{k+1} = u_k − τ L(L* u_k − v)``, kept until its inputs, ``L_{k+1}`` or ``τ_{k+1}``
        change: the forward pass computes every ``p``, and the backward sweep asks for ``p_{k+1}``
        in the ``u_{k+1}``-block (``u_k`` still the forward state) and again in the ``u_k``-block."""
        w, tau = self.prox.weight(k), self.prox.tau
        # the weights and steps it used, by version (no host read of τ: a device sync off the CPU)
        key = (w._version, w.data_ptr(), tau._version, tau.data_ptr())
        hit = self._p_cache.get(k)
        if hit is not None and hit[0] is u_prev and hit[1] is v and hit[2] == key:
            return hit[3]
        p = self.prox.pre_activation(k, u_prev, v)
        self._p_cache[k] = (u_prev, v, key, p)
        return p

    def u_in(self, k: int) -> torch.Tensor:
        if k > 0:
            return self.u[k - 1]
        if self._u0 is None:
            self._u0 = self.prox.zero_state(self.target)
        return self._u0

    @torch.no_grad()
    def forward_states(self) -> None:
        """States of the forward pass of the current weights (all penalties zero)."""
        self.u, self.x = [], []
        u = self.u_in(0)
        x = self.x0
        self._v_cache = {}
        for k in range(self.K):
            v = self.v(k, x)
            if self.has_x:
                self._v_cache[k] = (x, v)  # x is x_in(k): x_0 or the state appended below
            u = self.prox.activation(self.p(k, u, v))
            self.u.append(u)
            if self.has_x and k < self.K - 1:   # the PNN's q_k feed nothing but the output
                x = v - self.prox.Lt(k, u)
                self.x.append(x)

    def output(self) -> torch.Tensor:
        """``q_K = v_K − L_K* u_K`` (the network output given the states)."""
        k = self.K - 1
        return self.v(k) - self.prox.Lt(k, self.u[k])


class LiftedUnrolledSolver:
    """Lifted Bregman BCD / ISGM for a :class:`~lifted_inverse.networks.pnn.ProximalLayers` net.

    ``net``: a :class:`~lifted_inverse.networks.pnn.PNN` or
    :class:`~lifted_inverse.networks.unrolled.UnrolledProximalNet` (weights updated in place).
    """

    def __init__(self, net, config: LiftedConfig | None = None):
        self.config = config or LiftedConfig()
        self.config.validate()
        self.net = net
        self.prox: ProximalLayers = net.prox
        self.act = Clip(self.prox.lam)
        self.data_step = getattr(net, "data_step", 1.0)
        self.steps = [float(self.config.lr)] * len(self.prox.weights)
        self.batch: LiftedBatch | None = None  # persistent (BCD) batch
        self._bcd_y: torch.Tensor | None = None  # its measurements as passed to step()
        self.energy_before_weights = math.nan
        self.adam = torch.optim.Adam(self.prox.weights.parameters(), lr=self.config.lr,
                                     betas=tuple(self.config.adam_betas)) \
            if self.config.solver == "adam" else None

    # ---- energy ------------------------------------------------------------------------
    def _coef(self, k: int) -> float:
        """Weight of the quadratic term of layer k: ρ, or w for the output layer."""
        return self.config.loss_weight if k == self.prox.n_layers - 1 else self.config.rho

    def layer_term(self, b: LiftedBatch, k: int, *, u_prev=None, u=None, x_prev=None, x=None,
                   weight=None, tau=None) -> torch.Tensor:
        """Batch mean of ``T_k = B_clip(u_k, p_k) + c_k/2‖x_k − q_k‖²`` (c_k = ρ, or w with
        ``x_K := x†`` as the target); any argument overrides the stored quantity."""
        prox = self.prox
        u_prev = b.u_in(k) if u_prev is None else u_prev
        u = b.u[k] if u is None else u
        v = b.v(k, x_prev) if (b.has_x or x_prev is not None) else b.y
        if tau is None:
            p = prox.pre_activation(k, u_prev, v, weight)
        else:
            p = u_prev - tau * prox.L(k, prox.Lt(k, u_prev, weight) - v, weight)
        breg = self.act.bregman(u, p)
        last = k == prox.n_layers - 1
        if last or b.has_x:
            xk = b.target if last else (b.x[k] if x is None else x)
            q = v - prox.Lt(k, u, weight)
            breg = breg + 0.5 * self._coef(k) * (xk - q).flatten(1).pow(2).sum(1)
        return breg.mean()

    @torch.no_grad()
    def layer_value_and_grad(self, b: LiftedBatch, k: int, weight: torch.Tensor | None = None):
        """``(T_k, ∂T_k/∂L_k)`` (batch means) in closed form, without autograd.

        With ``e = L*u_{k−1} − v``, ``p = u_{k−1} − τLe``, ``r = σ(p) − u_k`` (``= ∂B/∂p``) and
        ``d = x_k − q_k = x_k − v + L*u_k``:  ``∂T_k/∂L = −τ(G(e, r) + G(L*r, u_{k−1})) + c_k G(d, u_k)``
        where ``G(a, g) = ∂⟨g, L a⟩/∂L`` is the convolution weight gradient (``τ_k`` fixed, as in
        the forward pass)."""
        prox = self.prox
        u_prev, u = b.u_in(k), b.u[k]
        w = (prox.weight(k) if weight is None else weight).detach().to(u.dtype)
        tau = float(prox.step(k))
        v = b.v(k) if b.has_x else b.y
        e = prox.Lt(k, u_prev, w) - v
        p = torch.sub(u_prev, prox.L(k, e, w), alpha=tau)
        value, r = self.act.bregman_with_residual(u, p)
        grad = weight_gradient(e, r, w).add_(weight_gradient(prox.Lt(k, r, w), u_prev, w)).mul_(-tau)
        last = k == prox.n_layers - 1
        if last or b.has_x:
            c = self._coef(k)
            d = prox.Lt(k, u, w) - v + (b.target if last else b.x[k])
            value = value + 0.5 * c * d.flatten(1).pow(2).sum(1)
            grad.add_(weight_gradient(d, u, w), alpha=c)
        return value.mean(), grad.div_(u.shape[0])

    @torch.no_grad()
    def energy(self, b: LiftedBatch) -> float:
        """The lifted objective E of the batch (batch mean, without ISGM's proximal term)."""
        return float(sum(self.layer_term(b, k) for k in range(self.prox.n_layers)))

    # ---- state blocks ------------------------------------------------------------------
    def _update_u(self, b: LiftedBatch, k: int) -> None:
        """Prox-gradient step(s) on ``u_k`` (list index k) with step ``1/ℓ_u`` (module docstring).

        ``∇S = −p_k + c_k L_k(x_k − q_k) + M_{k+1}(σ(p_{k+1}) − u_{k+1})`` per sample, with
        ``M = I − τ L L*`` (self-adjoint); ``u ← prox_{F/ℓ}(u − ∇S/ℓ)``."""
        prox, K = self.prox, self.prox.n_layers
        has_quad = b.has_x or k == K - 1
        norm_k = float(prox.norms[prox.index(k)])
        lip = (self._coef(k) * (1.05 * norm_k) ** 2 if has_quad else 0.0) + (1.0 if k < K - 1 else 0.0)
        with torch.no_grad():
            v = b.v(k)
            p = b.p(k, b.u_in(k), v)
            if lip == 0.0:  # only −⟨u, p_k⟩ + F(u): the block's minimiser is σ(p_k)
                b.u[k] = self.act(p)
                return
            mu = self.config.state_lr / lip
            xk = (b.target if k == K - 1 else b.x[k]) if has_quad else None
            v_next = b.v(k + 1) if k < K - 1 else None
            for _ in range(self.config.state_steps):
                u = b.u[k]
                # u − μ∇S = u + μp − μc_k L(x − v + L*u) − μr + μτ L L*r, accumulated in place
                # (every pass over the feature maps costs about as much as a small convolution)
                step = torch.add(u, p, alpha=mu)
                if has_quad:
                    step.sub_(prox.L(k, xk - v + prox.Lt(k, u)), alpha=mu * self._coef(k))
                if k < K - 1:
                    p_next = b.p(k + 1, u, v_next)
                    r = self.act(p_next).sub_(b.u[k + 1])
                    step.sub_(r, alpha=mu).add_(prox.L(k + 1, prox.Lt(k + 1, r)), alpha=mu * float(prox.step(k + 1)))
                b.u[k] = self.act.prox_F(step, mu)

    def _update_x(self, b: LiftedBatch, k: int) -> None:
        """Gradient step(s) on ``x_{k+1}`` (list index k, k = 0..K−2), step ``1/ℓ_x``.

        ``∇ = ρ(x − q_{k+1}) + (I − γA*A)[τ L*(σ(p_{k+2}) − u_{k+2}) − c(x_{k+2} − q_{k+2})]``."""
        prox, K = self.prox, self.prox.n_layers
        j = k + 1
        tau_j = prox.step(j)
        lip = self.config.rho + (float(tau_j) * 1.05 * float(prox.norms[prox.index(j)])) ** 2 + self._coef(j)
        with torch.no_grad():
            q_k = b.v(k) - prox.Lt(k, b.u[k])
            x_next = b.target if j == K - 1 else b.x[j]
            for _ in range(self.config.state_steps):
                x = b.x[k]
                v = b.v(j) if x is b.x_in(j) else b.v(j, x)   # stored x: v and p are cached
                p = b.p(j, b.u[k], v)
                q = v - prox.Lt(j, b.u[j])
                dv = tau_j.to(x.dtype) * prox.Lt(j, self.act(p).sub_(b.u[j])) - self._coef(j) * (x_next - q)
                dx = dv - b.gamma * b.A.adjoint(b.A(dv))
                b.x[k] = x - (self.config.rho * (x - q_k) + dx) * (self.config.state_lr / lip)

    def state_sweep(self, b: LiftedBatch) -> None:
        """Backward Gauss–Seidel sweep: ``u_K, x_{K−1}, u_{K−1}, …, u_1`` (one block at a time,
        so the output loss reaches the first layer within one sweep)."""
        for k in reversed(range(self.prox.n_layers)):
            self._update_u(b, k)
            if b.has_x and k >= 1:
                self._update_x(b, k - 1)

    # ---- weight blocks -----------------------------------------------------------------
    def _weight_objective(self, b, layers, weight, anchor, tau=None) -> torch.Tensor:
        val = sum(self.layer_term(b, k, weight=weight, tau=tau) for k in layers)
        if self.config.prox_weight > 0 and anchor is not None:
            val = val + 0.5 * self.config.prox_weight * (weight - anchor).pow(2).sum()
        return val

    def weight_step(self, b: LiftedBatch, anchors: list[torch.Tensor] | None = None) -> None:
        """One backtracked gradient step per weight block (every layer, or the tied weight)."""
        prox = self.prox
        groups = [list(range(prox.n_layers))] if prox.tied else [[k] for k in range(prox.n_layers)]
        for i, layers in enumerate(groups):
            param = prox.weights[i]
            anchor = None if anchors is None else anchors[i]
            w0 = param.detach().clone()
            f0, g = 0.0, torch.zeros_like(w0)
            for k in layers:
                value, gk = self.layer_value_and_grad(b, k, w0)
                f0 += float(value)
                g.add_(gk.to(g.dtype))
            if self.config.prox_weight > 0 and anchor is not None:
                f0 += 0.5 * self.config.prox_weight * float((w0 - anchor).pow(2).sum())
                g.add_(w0 - anchor, alpha=self.config.prox_weight)
            gsq = float(g.pow(2).sum())
            if not math.isfinite(gsq) or gsq <= 1e-10 * max(abs(f0), 1e-30):
                continue  # at a stationary point up to rounding (e.g. states of the forward pass)
            s = self.steps[i]
            with torch.no_grad():
                for _ in range(self.config.max_backtracks):
                    w1 = w0.detach() - s * g
                    norm_sq, probe = prox.estimate_norm_sq(i, w1, self.config.norm_iterations)
                    tau = torch.tensor(prox.step_factor / norm_sq, dtype=w1.dtype, device=w1.device)
                    f1 = float(self._weight_objective(b, layers, w1, anchor, tau=tau))
                    if math.isfinite(f1) and f1 <= f0 - 0.25 * s * gsq:
                        param.copy_(w1)
                        prox.set_norm(i, norm_sq, probe)
                        self.steps[i] = s * self.config.grow
                        break
                    s *= 0.5
                else:
                    # no decrease found (rounding-level changes): keep the weights and the trial
                    # step, so one hard block cannot shrink later steps to nothing
                    pass

    def adam_step(self, b: LiftedBatch, anchors=None) -> None:
        """Adam on the local W-block gradients ``∇_{L_k} T_k`` (all layers in one call), then
        ``τ_k`` refreshed from the power-iterated norms."""
        prox = self.prox
        grads = [torch.zeros_like(w) for w in prox.weights]
        energy = 0.0
        for k in range(prox.n_layers):
            value, g = self.layer_value_and_grad(b, k)
            energy += float(value)
            grads[prox.index(k)].add_(g.to(grads[prox.index(k)].dtype))
        if self.config.prox_weight > 0 and anchors is not None:
            for g, w, a in zip(grads, prox.weights, anchors):
                g.add_(w.detach() - a, alpha=self.config.prox_weight)
        for w, g in zip(prox.weights, grads):
            w.grad = g
        self.energy_before_weights = energy
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)
        self.prox.refresh_steps(self.config.norm_iterations)

    # ---- solvers -----------------------------------------------------------------------
    def sweep(self, b: LiftedBatch, anchors=None) -> None:
        self.state_sweep(b)
        for _ in range(self.config.weight_steps):
            if self.adam is not None:
                self.adam_step(b, anchors)
            else:
                self.weight_step(b, anchors)

    def step(self, y: torch.Tensor, target: torch.Tensor, A: LinearOperator | None = None) -> float:
        """One solver step on a batch; returns the lifted objective E after it ('adam': E before
        its last weight update, at the states of its last sweep).

        ``'isgm'``: states from a forward pass, ``inner_sweeps`` sweeps with the proximal term
        anchored at the weights on entry. ``'bcd'``: the batch is the whole training set; its
        states persist between calls (the first call starts them at a forward pass).
        """
        cfg = self.config
        if cfg.solver != "bcd" or self.batch is None:
            b = self._batch(y, target, A)
            b.forward_states()
            if cfg.solver == "bcd":
                self.batch, self._bcd_y = b, y
        else:
            b = self.batch
            if self._bcd_y is not y and not (self._bcd_y.shape == y.shape and torch.equal(self._bcd_y, y)):
                raise ValueError("y: BCD keeps per-sample states; call step() with the same batch "
                                 "every time (use solver='isgm' for mini-batches)")
        anchors = [w.detach().clone() for w in self.prox.weights] \
            if cfg.solver != "bcd" and cfg.prox_weight > 0 else None
        for _ in range(cfg.inner_sweeps):
            self.sweep(b, anchors)
        if self.adam is not None:
            # E at the last sweep's states and the weights before its (non-monotone) Adam
            # step: computed by that step's own pass, so no extra pass over the network
            return self.energy_before_weights
        return self.energy(b)

    def _batch(self, y, target, A) -> LiftedBatch:
        """The lifted batch of ``(y, x†)``; an unrolled net's data term (plain or ramp-weighted)
        and initial estimate come from the net itself (``data_problem``)."""
        if A is not None and hasattr(self.net, "data_problem"):
            with torch.no_grad():
                A, y, x0 = self.net.data_problem(y, A)
            return LiftedBatch(self.prox, y, target, A, self.data_step, x0=x0)
        return LiftedBatch(self.prox, y, target, A, self.data_step)

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "config": self.config.as_json(),
                "adam": None if self.adam is None else self.adam.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.steps = [float(s) for s in d["steps"]]
        if self.adam is not None and d.get("adam") is not None:
            self.adam.load_state_dict(d["adam"])
