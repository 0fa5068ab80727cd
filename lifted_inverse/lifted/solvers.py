"""Block solvers over the lifted objective (method §2-3): BCD, Nesterov, heavy ball, Adam, ISGM.

One sweep on a batch ``S``, its states ``X_S`` gathered from a :class:`StateStore` by sample id
(``state_init='store'``) or set to the forward pass ``x^l = σ_l(W_l x^{l−1} + b_l)`` of the
current weights (``'forward'``: every hidden penalty starts at zero, nothing is stored):

1. **State blocks**, colour group by colour group (odd/even for a chain; from the input side,
   ``state_order='bottom-up'``, or from the output side, ``'top-down'``): for a free state ``x``
   produced by layer ``p`` and read by layers ``c`` (as input ``k``), a proximal-gradient step on

       P_p(x, z_p) + Σ_c P_c(x^{out(c)}, z_c(x)),

   smooth gradient ``g = ∇_y^{smooth} P_p(x, z_p) + Σ_c A_{c,k}ᵀ ∇_z P_c``, Lipschitz
   ``L = L_y(P_p) + Σ_c L_z(P_c)‖A_{c,k}‖²`` (cached power iterations), then
   ``x ← prox_{(ω/L) P_p^{nonsmooth}}(x − ωg/L)`` (Bregman: ``prox_{μF}``; ``ω = state_lr`` in
   (0, 2), a descent step of the convex block). Samples are independent, so each step is one
   batched tensor operation per state.
2. **W-block** of every layer at once: ``G_l = (1/|S|) Σ_i (∂z_l/∂θ)ᵀ ∇_z P_l`` (closed forms,
   e.g. ``Σ (σ(z) − x^l)(x^{l−1})ᵀ``; no backprop through the network), all gradients and the
   batch statistics passed through ONE ``reduce_fn(list_of_tensors)`` hook (identity by default;
   ``torch.distributed.all_reduce`` for data-parallel training), then one update over all
   parameters (``torch._foreach_*``, a single batched call):

   * ``bcd``: ``θ ← prox_{R/L}(θ − G/L)``, ``L_l = L_z λ_max(Σ_i x̃_i x̃_iᵀ)/|S|`` by warm-started power
     iteration on the data Gram (``x̃ = [x; 1]``);
   * ``nesterov``: the same step from ``θ̂ = θ + β_k(θ − θ_prev)`` (FISTA ``β_k`` capped at
     ``momentum``: uncapped FISTA momentum diverges on mini-batch gradients), restarted per
     layer when ``⟨θ̂ − θ_new, θ_new − θ⟩ > 0`` (gradient restart: the block objective rose);
   * ``heavyball``: ``θ ← prox(θ − G/L + β(θ − θ_prev))``, same restart rule;
   * ``adam``: Adam on the local W-gradients (step ``lr``), then ``prox_{lr R}``.
3. **ISGM** (``isgm``): per mini-batch the states come from a forward pass with ``Θ^k``; then
   ``inner_sweeps`` sweeps of 1-2 on ``(1/|S|)Σ_i Σ_l P_l + Σ_l (1/2τ)‖θ_l − θ_l^k‖²`` (the
   W-gradient gains ``(θ − θ^k)/τ``, its Lipschitz constant ``1/τ``).

The objective reported by a sweep is the batch mean of ``Σ_l P_l`` at the W-step (before the
update), i.e. at ``(Θ^k, X^{k+1})``; for full-batch BCD this sequence is non-increasing.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .objective import LiftedObjective

SOLVERS = ("bcd", "nesterov", "heavyball", "adam", "isgm")
#: where a mini-batch's hidden states start: the per-sample store (the lifted variables of the
#: whole training set) or a forward pass with the current weights (no store; ISGM always)
STATE_INITS = ("store", "forward")
#: order of the colour groups in a state sweep: inputs to outputs, or outputs to inputs (the
#: output layer's residual then reaches the first hidden layer within one sweep of a 2-colour chain)
STATE_ORDERS = ("bottom-up", "top-down")

ReduceFn = Callable[[list], list]


def identity_reduce(tensors: list) -> list:
    """Default ``reduce_fn``: a single process sums over nothing."""
    return tensors


class StateStore:
    """Free lifted states per sample: ``{state index: tensor (N, *state_shape)}``.

    Indexed by sample ids so that each data-parallel rank keeps only its own shard.
    """

    def __init__(self, states: dict[int, torch.Tensor]):
        self.states = dict(states)

    @classmethod
    @torch.no_grad()
    def from_forward(cls, objective: LiftedObjective, x: torch.Tensor, chunk: int = 4096) -> StateStore:
        """States of the plain forward pass of ``x`` (B, *input_shape)."""
        net = objective.net
        parts: dict[int, list] = {s: [] for s in net.free_states}
        for start in range(0, x.shape[0], chunk):
            st = net.forward_states(x[start:start + chunk])
            for s in net.free_states:
                parts[s].append(st[s])
        return cls({s: torch.cat(v) for s, v in parts.items()})

    def gather(self, ids: torch.Tensor | None) -> dict[int, torch.Tensor]:
        if ids is None:
            return {s: v.clone() for s, v in self.states.items()}
        return {s: v.index_select(0, ids) for s, v in self.states.items()}

    def scatter(self, ids: torch.Tensor | None, values: dict[int, torch.Tensor]) -> None:
        for s, v in values.items():
            if ids is None:
                self.states[s] = v
            else:
                self.states[s].index_copy_(0, ids, v)

    def __len__(self):
        return next(iter(self.states.values())).shape[0] if self.states else 0

    def state_dict(self) -> dict:
        return {str(s): v for s, v in self.states.items()}

    @classmethod
    def from_state_dict(cls, d: dict) -> StateStore:
        return cls({int(s): v for s, v in d.items()})


class LiftedSolver:
    """Block-coordinate solvers over a :class:`LiftedObjective` (see module docstring).

    Args:
        objective: the lifted objective (network, penalties, regulariser).
        solver: one of ``SOLVERS``.
        lr: step multiplier (``θ ← θ − lr·G/L``) for bcd/nesterov/heavyball; Adam's step size for
            ``adam`` (default 1e-3 there); for ``isgm``, multiplier of the inner W steps.
        state_steps: proximal-gradient steps per state block per sweep.
        momentum: β of heavy ball; cap of Nesterov's β_k.
        tau: ISGM proximal weight τ (``(1/2τ)‖θ − θ^k‖²``).
        inner_sweeps: ISGM inner sweeps per mini-batch.
        betas, eps: Adam parameters.
        power_iterations: warm-started power iterations per W-step for the data Gram.
        reduce_fn: hook summing a list of tensors across data-parallel ranks (identity by default).
        state_init: ``'store'`` (hidden states of the batch from the :class:`StateStore`, written
            back) or ``'forward'`` (from ``x^l = σ_l(W_l x^{l-1} + b_l)`` with the current weights,
            where every hidden penalty is zero; no store). ISGM always starts from the forward pass.
        state_order: ``'bottom-up'`` (colour groups from the input side) or ``'top-down'``.
        state_lr: step ``state_lr/L`` of every state block; any value in (0, 2) is a descent step
            of the proximal-gradient state block (1: the classical ``1/L``).
    """

    def __init__(self, objective: LiftedObjective, solver: str = "bcd", lr: float | None = None,
                 state_steps: int = 1, momentum: float = 0.9, tau: float = 1.0, inner_sweeps: int = 3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 power_iterations: int = 3, reduce_fn: ReduceFn | None = None,
                 state_init: str = "store", state_order: str = "bottom-up", state_lr: float = 1.0):
        if solver not in SOLVERS:
            raise ValueError(f"solver: unknown {solver!r}; expected one of {list(SOLVERS)}")
        if state_init not in STATE_INITS:
            raise ValueError(f"state_init: expected one of {list(STATE_INITS)}, got {state_init!r}")
        if state_order not in STATE_ORDERS:
            raise ValueError(f"state_order: expected one of {list(STATE_ORDERS)}, got {state_order!r}")
        if lr is None:
            lr = 1e-3 if solver == "adam" else 1.0
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr: must be a positive finite number, got {lr}")
        for name, v in (("state_steps", state_steps), ("inner_sweeps", inner_sweeps),
                        ("power_iterations", power_iterations)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must lie in [0, 1), got {momentum}")
        if not tau > 0:
            raise ValueError(f"tau: must be positive, got {tau}")
        self.objective = objective
        self.net = objective.net
        self.solver = solver
        self.lr = float(lr)
        self.state_steps = int(state_steps)
        self.momentum = float(momentum)
        self.tau = float(tau)
        self.inner_sweeps = int(inner_sweeps)
        self.power_iterations = int(power_iterations)
        self.reduce_fn = reduce_fn or identity_reduce
        self.state_init = "forward" if solver == "isgm" else state_init
        self.state_order = state_order
        self.state_lr = float(state_lr)
        self.layers = self.net.layers
        self.params = [list(layer.parameters()) for layer in self.layers]
        self.flat_params = [p for ps in self.params for p in ps]
        self._wvec: list[list[torch.Tensor] | None] = [None] * len(self.layers)
        self._prev: list[torch.Tensor] | None = None       # θ_prev (nesterov/heavyball)
        self._t = [1.0] * len(self.layers)                  # FISTA t_k per layer
        self.adam = torch.optim.Adam(self.flat_params, lr=self.lr, betas=betas, eps=eps, foreach=True) \
            if solver == "adam" else None
        self.sweeps = 0

    # ---- helpers ------------------------------------------------------------------------------
    def _z(self, layer, states, cache):
        z = cache.get(layer.index)
        if z is None:
            z = layer.pre_activation([states[s] for s in layer.inputs])
            cache[layer.index] = z
        return z

    def batch_states(self, x: torch.Tensor, target: torch.Tensor, hidden: dict[int, torch.Tensor]) -> list:
        """Full state list ``[x^0, hidden..., target]`` for a batch."""
        net = self.net
        x0 = net.check_input(x)
        tshape = net.state_shapes[-1]
        if tuple(target.shape[1:]) != tshape or target.shape[0] != x.shape[0]:
            raise ValueError(f"target: expected shape ({x.shape[0]}, {', '.join(map(str, tshape))}), "
                             f"got {tuple(target.shape)}")
        if not bool(torch.isfinite(target).all()):
            raise ValueError("target: contains NaN or inf")
        states = [None] * net.num_states
        states[0] = x0
        states[-1] = target
        for s, v in hidden.items():
            states[s] = v
        return states

    # ---- block 1: states ----------------------------------------------------------------------
    @torch.no_grad()
    def update_states(self, states: list, cache: dict | None = None) -> None:
        """Proximal-gradient steps on every free state, colour group by colour group in
        ``state_order`` (in place)."""
        net, pens = self.net, self.objective.penalties
        cache = {} if cache is None else cache
        for group in (net.colors if self.state_order == "bottom-up" else reversed(net.colors)):
            for s in group:
                p = net.producer[s]
                pen_p = pens[p.index]
                z_p = self._z(p, states, cache)
                for _ in range(self.state_steps):
                    x = states[s]
                    g = pen_p.grad_y_smooth(p.activation, x, z_p)
                    lip = pen_p.lipschitz_y(p.activation)
                    for c, k in net.consumers[s]:
                        pen_c = pens[c.index]
                        r = pen_c.grad_z(c.activation, states[c.output], self._z(c, states, cache))
                        g = g + c.input_adjoint(k, r)
                        lip += pen_c.lipschitz_z(c.activation) * c.input_lipschitz(k)
                    t = self.state_lr / max(lip, 1e-12)
                    states[s] = pen_p.prox_y(p.activation, x - t * g, t)
                    for c, _ in net.consumers[s]:
                        cache.pop(c.index, None)

    # ---- block 2: weights ---------------------------------------------------------------------
    def _data_lipschitz(self, states: list, count: float) -> list[float]:
        """``L_z(P_l)·λ_max(Σ_i x̃_i x̃_iᵀ)/count`` per layer by warm-started power iteration."""
        pens = self.objective.penalties
        vecs = []
        first = False
        for i, layer in enumerate(self.layers):
            if self._wvec[i] is None:
                self._wvec[i] = layer.weight_probe()
                first = True
            vecs.append(self._wvec[i])
        iters = 20 if first else self.power_iterations
        lams = [0.0] * len(self.layers)
        xs = [[states[s] for s in layer.inputs] for layer in self.layers]
        for _ in range(iters):
            norms = [math.sqrt(sum(float((t * t).sum()) for t in v)) or 1.0 for v in vecs]
            vecs = [[t / n for t in v] for v, n in zip(vecs, norms)]
            out = [layer.weight_gram_apply(x, v) for layer, x, v in zip(self.layers, xs, vecs)]
            flat = self.reduce_fn([t for o in out for t in o])
            it = iter(flat)
            out = [[next(it) for _ in o] for o in out]
            lams = [sum(float((a * b).sum()) for a, b in zip(v, o)) for v, o in zip(vecs, out)]
            vecs = out
        self._wvec = vecs
        return [pens[i].lipschitz_z(layer.activation) * max(lam, 0.0) / count
                for i, (layer, lam) in enumerate(zip(self.layers, lams))]

    @torch.no_grad()
    def _gradients(self, states: list, cache: dict) -> tuple[list[list[torch.Tensor]], float, float]:
        """Mean W-gradients of every layer (reduced), the batch count and the mean objective."""
        pens = self.objective.penalties
        grads, value = [], None
        for layer in self.layers:
            z = self._z(layer, states, cache)
            pen = pens[layer.index]
            y = states[layer.output]
            v, r = pen.value_and_grad_z(layer.activation, y, z)
            v = v.sum()
            value = v if value is None else value + v
            grads.append(layer.weight_grad([states[s] for s in layer.inputs], r))
        stats = torch.stack([torch.as_tensor(float(states[0].shape[0]), dtype=value.dtype,
                                             device=value.device), value])
        flat = self.reduce_fn([g for gs in grads for g in gs] + [stats])
        count, total = float(flat[-1][0]), float(flat[-1][1])
        it = iter(flat[:-1])
        grads = [[next(it) / count for _ in gs] for gs in grads]
        return grads, count, total / count

    @torch.no_grad()
    def weight_step(self, states: list, cache: dict | None = None,
                    anchor: list[torch.Tensor] | None = None) -> float:
        """One update of all W-blocks (see module docstring); returns the batch objective."""
        cache = {} if cache is None else cache
        solver = self.solver
        if solver == "nesterov":
            if self._prev is None:
                self._prev = [p.clone() for p in self.flat_params]
            extrapolated = []
            j = 0
            for i, ps in enumerate(self.params):
                t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * self._t[i] ** 2))
                beta = min((self._t[i] - 1.0) / t_new, self.momentum)
                self._t[i] = t_new
                for p in ps:
                    prev = self._prev[j]
                    cur = p.clone()
                    if beta > 0:
                        p.add_(p - prev, alpha=beta)
                    self._prev[j] = cur
                    j += 1
                extrapolated.append(beta > 0)
            if any(extrapolated):
                cache.clear()
        grads, count, value = self._gradients(states, cache)
        flat_grads = [g for gs in grads for g in gs]
        if solver == "adam":
            for p, g in zip(self.flat_params, flat_grads):
                p.grad = g
            self.adam.step()
            for p in self.flat_params:
                p.grad = None
            if self.objective.regularizer is not None:
                self.objective.regularizer.prox(self.flat_params, [self.lr] * len(self.flat_params))
            self.sweeps += 1
            return value
        lips = self._data_lipschitz(states, count)
        if anchor is not None:   # ISGM proximal term (1/2τ)‖θ − θ^k‖²
            flat_grads = [g + (p - a) / self.tau for g, p, a in zip(flat_grads, self.flat_params, anchor)]
            lips = [lip + 1.0 / self.tau for lip in lips]
        steps = [self.lr / max(lip, 1e-12) for lip in lips]
        flat_steps = [-st for st, ps in zip(steps, self.params) for _ in ps]
        old = [p.clone() for p in self.flat_params] if solver in ("nesterov", "heavyball") else None
        if anchor is None:
            self._descend(grads, steps)
        else:
            torch._foreach_add_(self.flat_params, torch._foreach_mul(flat_grads, flat_steps))
        if solver == "heavyball" and self._prev is not None and self._prev[0] is not None:
            torch._foreach_add_(self.flat_params, torch._foreach_mul(
                torch._foreach_sub(old, self._prev), [self.momentum] * len(old)))
        if self.objective.regularizer is not None:
            self.objective.regularizer.prox(self.flat_params, [-s for s in flat_steps])
        if solver in ("nesterov", "heavyball"):
            self._restart(old, flat_grads)
        self.sweeps += 1
        return value

    def _descend(self, grads: list[list[torch.Tensor]], steps: list[float]) -> None:
        """``θ_l ← θ_l − s_l G_l`` for every layer ``l`` (``grads`` per layer, as ``_gradients``)."""
        flat_steps = [-st for st, ps in zip(steps, self.params) for _ in ps]
        torch._foreach_add_(self.flat_params, torch._foreach_mul([g for gs in grads for g in gs], flat_steps))

    def _restart(self, old: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Per-layer gradient restart (O'Donoghue & Candès): drop the momentum of a layer whose
        step went uphill, ``⟨G, θ_new − θ_k⟩ > 0`` (heavy ball) or ``⟨θ̂ − θ_new, θ_new − θ_k⟩ > 0``
        (Nesterov, ``θ̂`` the extrapolated point)."""
        if self._prev is None:
            self._prev = [None] * len(self.flat_params)
        j = 0
        for i, ps in enumerate(self.params):
            n = len(ps)
            if self.solver == "nesterov":
                dot = sum(float(((o - p) * (p - q)).sum())
                          for o, p, q in zip(old[j:j + n], ps, self._prev[j:j + n]))
                if dot > 0:
                    self._t[i] = 1.0
            else:
                dot = sum(float((g * (p - o)).sum()) for g, p, o in zip(grads[j:j + n], ps, old[j:j + n]))
                for m in range(n):
                    self._prev[j + m] = ps[m].clone() if dot > 0 else old[j + m]
            j += n

    # ---- one sweep / step on a batch ----------------------------------------------------------
    @torch.no_grad()
    def step(self, x: torch.Tensor, target: torch.Tensor, store: StateStore | None = None,
             ids: torch.Tensor | None = None) -> float:
        """One block sweep on the batch ``(x, target)``; returns the batch objective.

        With ``state_init='store'`` the hidden states come from ``store`` (indexed by ``ids``; all
        samples when ``ids`` is None) and are written back; with ``'forward'`` (and for ``isgm``)
        they come from a forward pass and ``store`` is not needed.
        """
        if self.solver == "isgm":
            return self._isgm_step(x, target)
        from_store = self.state_init == "store"
        if from_store and store is None:
            raise ValueError("store: BCD-type solvers with state_init='store' need the per-sample StateStore")
        cache: dict = {}
        if from_store:
            hidden = store.gather(ids)
        else:   # the forward pass's pre-activations stay valid until a state or weight changes
            fwd = self.net.forward_states(x, pre_activations=cache)
            hidden = {s: fwd[s] for s in self.net.free_states}
        states = self.batch_states(x, target, hidden)
        self.update_states(states, cache)
        value = self.weight_step(states, cache)
        if from_store:
            store.scatter(ids, {s: states[s] for s in self.net.free_states})
        return value

    def _isgm_step(self, x, target) -> float:
        fwd = self.net.forward_states(x)
        states = self.batch_states(x, target, {s: fwd[s] for s in self.net.free_states})
        anchor = [p.clone() for p in self.flat_params]
        first = None
        for _ in range(self.inner_sweeps):
            cache: dict = {}
            self.update_states(states, cache)
            v = self.weight_step(states, cache, anchor=anchor)
            first = v if first is None else first
        return first

    # ---- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Solver state (tensors, numbers, strings only: loadable with ``weights_only=True``)."""
        maps = []
        for layer in self.layers:
            m = getattr(layer, "map", None)
            if m is None:
                maps.append({})
                continue
            w = m.weight
            fresh = m._cache_key == (w.data_ptr(), w._version, w.dtype, w.device)
            maps.append({"vec": m._vec, "norm_sq": float(m._norm_sq), "fresh": bool(fresh),
                         "started": m._cache_key is not None})
        return {
            "solver": self.solver, "sweeps": self.sweeps, "t": list(self._t),
            "prev": None if self._prev is None else list(self._prev),
            "wvec": [None if v is None else list(v) for v in self._wvec],
            "adam": None if self.adam is None else self.adam.state_dict(),
            "maps": maps, "epoch": self.objective.epoch,
        }

    def load_state_dict(self, d: dict) -> None:
        if d["solver"] != self.solver:
            raise ValueError(f"checkpoint: solver state is for {d['solver']!r}, not {self.solver!r}")
        self.sweeps = int(d["sweeps"])
        self._t = [float(t) for t in d["t"]]
        self._prev = None if d["prev"] is None else list(d["prev"])
        self._wvec = [None if v is None else list(v) for v in d["wvec"]]
        if self.adam is not None:
            self.adam.load_state_dict(d["adam"])
        self.objective.set_epoch(int(d.get("epoch", 0)))
        for layer, m_state in zip(self.layers, d["maps"]):
            m = getattr(layer, "map", None)
            if m is None or not m_state:
                continue
            m._vec = m_state["vec"]
            m._norm_sq = m_state["norm_sq"]
            w = m.weight
            if m_state["fresh"]:
                m._cache_key = (w.data_ptr(), w._version, w.dtype, w.device)
            elif m_state["started"]:
                m._cache_key = ("stale",)
            else:
                m._cache_key = None
