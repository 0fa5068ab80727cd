"""Block solvers over the lifted objective (method §2-3): BCD, Nesterov, heavy ball, Adam, ISGM.

One sweep on a batch ``S``, its states ``X_S`` gathered from a :class:`StateStore` by sample id
(``state_init='store'``) or set to the forward pass ``x^l = σ_l(W_l x^{l−1} + b_l)`` of the
current weights (``'forward'``: every hidden penalty starts at zero, nothing is stored):

1. **State blocks**, colour group by colour group (odd/even for a chain; from the input side,
   ``state_order='bottom-up'``, or from the output side, ``'top-down'``), or one state at a time
   from the output side (``'backward'``: a Gauss–Seidel sweep, so the output's residual reaches
   the first layer within one sweep of any graph): for a free state ``x``
   produced by layer ``p`` and read by layers ``c`` (as input ``k``), a proximal-gradient step on

       P_p(x, z_p) + Σ_c P_c(x^{out(c)}, z_c(x)),

   smooth gradient ``g = ∇_y^{smooth} P_p(x, z_p) + Σ_c A_{c,k}ᵀ ∇_z P_c``, Lipschitz
   ``L = L_y(P_p) + Σ_c L_z(P_c)‖A_{c,k}‖²`` (cached power iterations), then
   ``x ← prox_{(ω/L) P_p^{nonsmooth}}(x − ωg/L)`` (Bregman: ``prox_{μF}``; ``ω = state_lr`` in
   (0, 2), a descent step of the convex block). Samples are independent, so each step is one
   batched tensor operation per state.

   The **state phase** repeats such sweeps (``solve_states``) before the W-step: at most
   ``state_sweeps`` of them (``'auto'``: one per free state, the depth in states of the graph,
   so the output's residual reaches the first layer whatever the order), stopping early once the
   state objective ``F(X) = (1/|S|) Σ_i Σ_l P_l`` at the fixed weights decreases by less than
   ``state_tol·|F|`` in a sweep. Every state step is a descent step of a convex block, so
   ``F`` is non-increasing over the sweeps; with a single sweep the output's residual moves only
   about two states down a 2-colour chain per sweep, and the lower W-blocks see no gradient.
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
   ``inner_sweeps`` sweeps of 1-2 on ``(1/|S|)Σ_i Σ_l P_l + Σ_l (η/2)‖θ_l − θ_l^k‖²``
   (``η = prox_weight``, by default ``1/tau``; the W-gradient gains ``η(θ − θ^k)``, its Lipschitz
   constant ``η``; ``η = 0`` drops the term).

W-blocks are grouped by shared parameter: layers that read the same tensor (an unrolled network's
``L_k`` enters its dual and its image layer; tied weights enter every layer) form one block, with
the sum of their gradients. Layers that are not affine in their weights (``weight_probe()`` is
None, so no Gram bounds the block's Lipschitz constant) take **backtracked proximal-gradient
steps** instead (bcd, isgm; every block of such a network): from the trial step ``s`` (first
``lr``), ``θ⁺ = prox_{sR}(θ − sG)`` is accepted when the block's objective ``f + R`` (its layers'
penalties, ISGM's proximal term) satisfies ``f(θ⁺) + R(θ⁺) ≤ f(θ) + R(θ) − ‖θ⁺ − θ‖²/(4s)``;
``s`` halves per rejection and grows by ``grow`` after an acceptance; after ``max_backtracks``
rejections the block keeps its weights. ``net.weight_hook`` (a
:class:`~lifted_inverse.lifted.model.WeightHook`) re-derives what the model computes from its
weights (e.g. step sizes ``τ_k = c/‖L_k‖²`` from power-iterated operator norms) after every
accepted step, as backprop's ``after_update`` does. The test holds those derived values fixed:
the W-gradient treats them as constants (as autograd does, for which they are buffers), so the
sufficient-decrease test is of the function ``G`` is the gradient of. Testing with the refresh
inside instead compares another function: its gradient has the term ``(∂f/∂τ)(∂τ/∂θ)`` that
``G`` lacks (τ_k rescales with ``‖L_k‖``), and its value moves with every warm-started power
iteration even at unchanged weights; on a deep unrolled network both exceed what a lower
layer's step can decrease, and every trial step of those layers was rejected. So the block
objective at fixed derived values never increases in a W-step; the refresh after it (a model
re-derivation, not a descent step) may change the objective.

The objective reported by a sweep is the batch mean of ``Σ_l P_l`` at the W-step (before the
update), i.e. at ``(Θ^k, X^{k+1})``; for full-batch BCD this sequence is non-increasing. With
several sweeps per batch (``inner_sweeps`` of ISGM, ``sweeps`` of the others), ISGM reports its
first sweep's value, the other solvers their last. A sweep's state phase may hold several state
sweeps (``state_sweeps``); the value is taken after all of them.
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
STATE_ORDERS = ("bottom-up", "top-down", "backward")
#: the solvers that also train layers without a W-block Gram (backtracked steps, or Adam)
BACKTRACKING_SOLVERS = ("bcd", "isgm", "adam")

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

    def gather(self, ids: torch.Tensor | None, only=None) -> dict[int, torch.Tensor]:
        """Copies of the states of samples ``ids`` (all samples for None); of the states in
        ``only`` when given."""
        keys = self.states if only is None else only
        if ids is None:
            return {s: self.states[s].clone() for s in keys}
        return {s: self.states[s].index_select(0, ids) for s in keys}

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
        tau: ISGM proximal parameter τ (``(1/2τ)‖θ − θ^k‖²``) when ``prox_weight`` is None.
        prox_weight: ISGM proximal weight ``η = 1/τ`` (``(η/2)‖θ − θ^k‖²``); 0 drops the term.
        inner_sweeps: ISGM inner sweeps per mini-batch.
        sweeps: sweeps per batch of the other solvers (states and W-blocks in turn).
        betas, eps: Adam parameters.
        power_iterations: warm-started power iterations per W-step for the data Gram.
        reduce_fn: hook summing a list of tensors across data-parallel ranks (identity by default).
        state_init: ``'store'`` (hidden states of the batch from the :class:`StateStore`, written
            back) or ``'forward'`` (from ``x^l = σ_l(W_l x^{l-1} + b_l)`` with the current weights,
            where every hidden penalty is zero; no store). ISGM always starts from the forward pass.
        state_order: ``'bottom-up'`` (colour groups from the input side) or ``'top-down'``.
        state_lr: step ``state_lr/L`` of every state block; any value in (0, 2) is a descent step
            of the proximal-gradient state block (1: the classical ``1/L``).
        grow, max_backtracks: backtracked W-steps (module docstring): factor on the trial step
            after an accepted step, and rejections before a block gives up for this sweep.
        state_sweeps: most state sweeps per state phase (module docstring); ``'auto'`` or None:
            one per free state (``len(net.free_states)``).
        state_tol: the state phase stops once a sweep decreases the state objective by at most
            ``state_tol·|F|``; 0 runs every sweep (and does not evaluate ``F``).
    """

    def __init__(self, objective: LiftedObjective, solver: str = "bcd", lr: float | None = None,
                 state_steps: int = 1, momentum: float = 0.9, tau: float = 1.0,
                 inner_sweeps: int = 3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, power_iterations: int = 3, reduce_fn: ReduceFn | None = None,
                 state_init: str = "store", state_order: str = "bottom-up", state_lr: float = 1.0,
                 prox_weight: float | None = None, grow: float = 2.0, max_backtracks: int = 10,
                 sweeps: int = 1, state_sweeps: int | str | None = 1, state_tol: float = 0.0):
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
                        ("power_iterations", power_iterations), ("max_backtracks", max_backtracks),
                        ("sweeps", sweeps)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must lie in [0, 1), got {momentum}")
        if not tau > 0:
            raise ValueError(f"tau: must be positive, got {tau}")
        if prox_weight is None:
            prox_weight = 1.0 / tau
        if not (prox_weight >= 0 and math.isfinite(prox_weight)):
            raise ValueError(f"prox_weight: must be a finite number >= 0, got {prox_weight}")
        if not 0 < state_lr < 2:
            raise ValueError(f"state_lr: expected 0 < state_lr < 2 (a step below 2/L), got {state_lr}")
        if state_sweeps is None or state_sweeps == "auto":
            state_sweeps = "auto"
        elif isinstance(state_sweeps, bool) or not isinstance(state_sweeps, (int, float)) \
                or int(state_sweeps) != state_sweeps or state_sweeps < 1:
            raise ValueError(f"state_sweeps: must be a positive integer or 'auto', got {state_sweeps!r}")
        if not (state_tol >= 0 and math.isfinite(state_tol)):
            raise ValueError(f"state_tol: must be a finite number >= 0, got {state_tol}")
        if not (grow >= 1 and math.isfinite(grow)):
            raise ValueError(f"grow: must be a finite number >= 1, got {grow}")
        self.objective = objective
        self.net = objective.net
        self.solver = solver
        self.lr = float(lr)
        self.state_steps = int(state_steps)
        self.momentum = float(momentum)
        self.tau = float(tau)
        self.prox_weight = float(prox_weight)
        self.grow = float(grow)
        self.max_backtracks = int(max_backtracks)
        self.inner_sweeps = int(inner_sweeps)
        self.sweeps_per_batch = int(sweeps)
        self.power_iterations = int(power_iterations)
        self.reduce_fn = reduce_fn or identity_reduce
        self.state_init = "forward" if solver == "isgm" else state_init
        self.state_order = state_order
        self.state_lr = float(state_lr)
        self.state_sweeps = state_sweeps if state_sweeps == "auto" else int(state_sweeps)
        self.state_tol = float(state_tol)
        #: state sweeps the last state phase ran, and F before / after each of them (state_tol > 0)
        self.last_state_sweeps = 0
        self.state_values: list[float] = []
        self.layers = self.net.layers
        self.params = [list(layer.parameters()) for layer in self.layers]
        # every parameter once (a tensor read by several layers is one W-block variable)
        self._pid: dict[int, int] = {}
        self.flat_params: list[torch.Tensor] = []
        for ps in self.params:
            for p in ps:
                if id(p) not in self._pid:
                    self._pid[id(p)] = len(self.flat_params)
                    self.flat_params.append(p)
        self.groups = self._weight_groups()
        shared = len(self.flat_params) < sum(len(ps) for ps in self.params)
        self.backtracking = any(layer.weight_probe() is None for layer in self.layers)
        self.grouped = shared or self.backtracking
        if self.grouped and solver in ("nesterov", "heavyball"):
            what = "layers without a W-block Gram" if self.backtracking else "weights shared by layers"
            raise ValueError(f"solver: {solver!r} needs one Lipschitz-bounded W-block per layer; this "
                             f"network has {what}; use one of {list(BACKTRACKING_SOLVERS)}")
        self._trial = [self.lr] * len(self.groups)          # backtracking trial steps per block
        self._layer_values: list[float] | None = None
        self._wvec: list[list[torch.Tensor] | None] = [None] * len(self.layers)
        self._prev: list[torch.Tensor] | None = None       # θ_prev (nesterov/heavyball)
        self._t = [1.0] * len(self.layers)                  # FISTA t_k per layer
        self.adam = torch.optim.Adam(self.flat_params, lr=self.lr, betas=betas, eps=eps, foreach=True) \
            if solver == "adam" else None
        self.sweeps = 0

    # ---- helpers ------------------------------------------------------------------------------
    def _weight_groups(self) -> list[tuple[list[int], list[int]]]:
        """W-blocks: ``(layer indices, parameter indices into flat_params)``, layers that share a
        parameter in one block (union-find), in order of first appearance."""
        parent = list(range(len(self.layers)))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        owner: dict[int, int] = {}
        for i, ps in enumerate(self.params):
            for p in ps:
                j = owner.setdefault(self._pid[id(p)], i)
                parent[root(i)] = root(j)
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for i, ps in enumerate(self.params):
            layers, pids = groups.setdefault(root(i), ([], []))
            layers.append(i)
            for p in ps:
                if self._pid[id(p)] not in pids:
                    pids.append(self._pid[id(p)])
        return list(groups.values())

    def settings(self) -> dict:
        """The solver's and the objective's options (JSON-able), as recorded with a run."""
        return {**self.objective.settings(), "solver": self.solver, "lr": self.lr,
                "state_steps": self.state_steps, "state_lr": self.state_lr,
                "state_init": self.state_init, "state_order": self.state_order,
                "state_sweeps": self.state_sweeps, "max_state_sweeps": self.max_state_sweeps,
                "state_tol": self.state_tol,
                "inner_sweeps": self.inner_sweeps, "sweeps": self.sweeps_per_batch, "momentum": self.momentum,
                "prox_weight": self.prox_weight, "power_iterations": self.power_iterations,
                "grow": self.grow, "max_backtracks": self.max_backtracks}

    def _z(self, layer, states, cache):
        z = cache.get(layer.index)
        if z is None:
            z = layer.pre_activation([states[s] for s in layer.inputs])
            cache[layer.index] = z
        return z

    def batch_states(self, x: torch.Tensor, target: torch.Tensor, hidden: dict[int, torch.Tensor]) -> list:
        """Full state list ``[x^0, hidden..., target]`` for a batch."""
        net = self.net
        fixed = net.prepare_inputs(x)
        tshape = net.state_shapes[-1]
        if tuple(target.shape[1:]) != tshape or target.shape[0] != x.shape[0]:
            raise ValueError(f"target: expected shape ({x.shape[0]}, {', '.join(map(str, tshape))}), "
                             f"got {tuple(target.shape)}")
        if not bool(torch.isfinite(target).all()):
            raise ValueError("target: contains NaN or inf")
        states = [None] * net.num_states
        states[:len(fixed)] = fixed
        states[-1] = target
        for s, v in hidden.items():
            states[s] = v
        return states

    # ---- block 1: states ----------------------------------------------------------------------
    @torch.no_grad()
    def update_states(self, states: list, cache: dict | None = None) -> None:
        """Proximal-gradient steps on every free state, colour group by colour group in
        ``state_order``, or one state at a time for ``'backward'`` (in place)."""
        net = self.net
        cache = {} if cache is None else cache
        if self.state_order == "backward":
            order = [[s] for s in reversed(net.free_states)]
        else:
            order = net.colors if self.state_order == "bottom-up" else list(reversed(net.colors))
        for group in order:
            for s in group:
                self.update_state(states, s, cache)

    @property
    def max_state_sweeps(self) -> int:
        """State sweeps per state phase at most: ``state_sweeps``, or for ``'auto'`` one per free
        state (each sweep carries the output's residual at least one state further down)."""
        if self.state_sweeps == "auto":
            return max(1, len(self.net.free_states))
        return self.state_sweeps

    @torch.no_grad()
    def state_value(self, states: list, cache: dict | None = None) -> float:
        """The state objective ``F(X) = (1/|S|) Σ_i Σ_l P_l`` at the current weights (summed
        and counted across data-parallel ranks through ``reduce_fn``, so every rank stops the
        state phase at the same sweep)."""
        cache = {} if cache is None else cache
        total = None
        for layer in self.layers:
            v = self.objective.layer_value(layer, states, self._z(layer, states, cache)).sum()
            total = v if total is None else total + v
        return self._reduced_mean(total, states[0].shape[0])

    def _reduced_mean(self, total: torch.Tensor, count: int) -> float:
        stats = torch.stack([torch.as_tensor(float(count), dtype=total.dtype, device=total.device), total])
        count, total = (float(v) for v in self.reduce_fn([stats])[0].tolist())
        return total / count

    @torch.no_grad()
    def solve_states(self, states: list, cache: dict | None = None) -> int:
        """The state phase (module docstring): ``update_states`` up to ``max_state_sweeps``
        times, stopping once a sweep decreases ``F`` by at most ``state_tol·|F|``. Returns the
        number of sweeps run; with ``state_tol > 0``, ``state_values`` holds ``F`` before the
        first sweep and after each."""
        cache = {} if cache is None else cache
        track = self.state_tol > 0
        self.state_values = [self.state_value(states, cache)] if track else []
        done = 0
        for _ in range(self.max_state_sweeps):
            self.update_states(states, cache)
            done += 1
            if track:
                self.state_values.append(self.state_value(states, cache))
                before, after = self.state_values[-2:]
                # from outside a penalty's domain (F = inf) the first sweeps always count
                if math.isfinite(before) and before - after <= self.state_tol * abs(before):
                    break
        self.last_state_sweeps = done
        return done

    @torch.no_grad()
    def state_gradient(self, states: list, s: int, cache: dict | None = None) -> tuple[torch.Tensor, float]:
        """``(g, L)`` of free state ``s``: the gradient of the smooth part of its block objective
        (per sample, not averaged) and its Lipschitz bound (module docstring, step 1)."""
        net, pens = self.net, self.objective.penalties
        cache = {} if cache is None else cache
        p = net.producer[s]
        pen_p = pens[p.index]
        g = pen_p.grad_y_smooth(p.activation, states[s], self._z(p, states, cache))  # a new tensor
        lip = pen_p.lipschitz_y(p.activation)
        shared: dict[int, list] = {}     # adjoints through one map: summed first, mapped once
        for c, k in net.consumers[s]:
            pen_c = pens[c.index]
            r = pen_c.grad_z(c.activation, states[c.output], self._z(c, states, cache))
            through = getattr(c, "input_adjoint_through", None)
            m, t = through(k, r) if through is not None else (None, c.input_adjoint(k, r))
            if m is None:
                g.add_(t)
            elif id(m) in shared:
                entry = shared[id(m)]
                entry[1] = entry[1].add_(t) if entry[2] else entry[1] + t   # never write into r
                entry[2] = True
            else:
                shared[id(m)] = [m, t, False]
            lip += pen_c.lipschitz_z(c.activation) * c.input_lipschitz(k)
        for m, t, _ in shared.values():
            g.add_(m.adjoint(t))
        return g, lip

    @torch.no_grad()
    def update_state(self, states: list, s: int, cache: dict | None = None) -> None:
        """``state_steps`` proximal-gradient steps on free state ``s`` (in place in ``states``);
        the pre-activations in ``cache`` that read it are dropped."""
        net, pens = self.net, self.objective.penalties
        cache = {} if cache is None else cache
        p = net.producer[s]
        for _ in range(self.state_steps):
            g, lip = self.state_gradient(states, s, cache)
            t = self.state_lr / max(lip, 1e-12)
            states[s] = pens[p.index].prox_y(p.activation, torch.add(states[s], g, alpha=-t), t)
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
        return [pens[layer.index].lipschitz_z(layer.activation) * max(lam, 0.0) / count
                for layer, lam in zip(self.layers, lams)]

    @torch.no_grad()
    def _gradients(self, states: list, cache: dict) -> tuple[list[list[torch.Tensor]], float, float]:
        """Mean W-gradients of every layer (reduced), the batch count and the mean objective."""
        pens = self.objective.penalties
        grads, values = [], []
        for layer in self.layers:
            z = self._z(layer, states, cache)
            pen = pens[layer.index]
            y = states[layer.output]
            v, r = pen.value_and_grad_z(layer.activation, y, z)
            values.append(v.sum())
            grads.append(layer.weight_grad([states[s] for s in layer.inputs], r))
        value = values[0]
        for v in values[1:]:
            value = value + v
        # backtracked blocks test their own layers' values: reduced with the rest
        stats = torch.stack([torch.as_tensor(float(states[0].shape[0]), dtype=value.dtype,
                                             device=value.device), value]
                            + (values if self.backtracking else []))
        flat = self.reduce_fn([g for gs in grads for g in gs] + [stats])
        count, total = float(flat[-1][0]), float(flat[-1][1])
        self._layer_values = [float(v) / count for v in flat[-1][2:]] if self.backtracking else None
        it = iter(flat[:-1])
        grads = [[next(it) / count for _ in gs] for gs in grads]
        return grads, count, total / count

    @torch.no_grad()
    def weight_step(self, states: list, cache: dict | None = None,
                    anchor: list[torch.Tensor] | None = None) -> float:
        """One update of all W-blocks (see module docstring); returns the batch objective."""
        cache = {} if cache is None else cache
        if self.grouped:
            return self._grouped_weight_step(states, cache, anchor)
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
            self._weights_changed(self.flat_params)
            self.sweeps += 1
            return value
        lips = self._data_lipschitz(states, count)
        if anchor is not None and self.prox_weight > 0:   # ISGM proximal term (η/2)‖θ − θ^k‖²
            flat_grads = [g + (p - a) * self.prox_weight for g, p, a in zip(flat_grads, self.flat_params, anchor)]
            lips = [lip + self.prox_weight for lip in lips]
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
        self._weights_changed(self.flat_params)
        self.sweeps += 1
        return value

    def _weights_changed(self, params: list[torch.Tensor]) -> None:
        """Let the model re-derive what it computes from ``params`` (``net.weight_hook``)."""
        if self.net.weight_hook is not None and params:
            self.net.weight_hook.refresh(params, self.power_iterations)

    def _grouped_weight_step(self, states: list, cache: dict, anchor) -> float:
        """W-step over blocks of shared parameters (module docstring): Adam on the summed
        gradients, Lipschitz steps when every layer has a Gram, else backtracked steps."""
        grads, count, value = self._gradients(states, cache)
        flat = self.flat_params
        summed: list[torch.Tensor | None] = [None] * len(flat)
        for ps, gs in zip(self.params, grads):
            for p, g in zip(ps, gs):
                i = self._pid[id(p)]
                summed[i] = g if summed[i] is None else summed[i] + g
        eta = self.prox_weight if anchor is not None else 0.0
        reg = self.objective.regularizer
        if self.solver == "adam":
            for p, g in zip(flat, summed):
                p.grad = g if eta == 0 else g + eta * (p - anchor[self._pid[id(p)]])
            self.adam.step()
            for p in flat:
                p.grad = None
            if reg is not None:
                reg.prox(flat, [self.lr] * len(flat))
            self._weights_changed(flat)
        else:
            lips = None if self.backtracking else self._data_lipschitz(states, count)
            for gi, (layer_ids, pids) in enumerate(self.groups):
                ps = [flat[i] for i in pids]
                gs = [summed[i] for i in pids]
                anc = None if eta == 0 else [anchor[i] for i in pids]
                if anc is not None:
                    gs = [g + eta * (p - a) for g, p, a in zip(gs, ps, anc)]
                if lips is None:
                    self._backtracked_step(gi, layer_ids, ps, gs, anc, states, count)
                    continue
                st = self.lr / max(sum(lips[i] for i in layer_ids) + eta, 1e-12)
                torch._foreach_add_(ps, torch._foreach_mul(gs, -st))
                if reg is not None:
                    reg.prox(ps, [st] * len(ps))
                self._weights_changed(ps)
        for layer in self.layers:      # every weight may have moved: no pre-activation is current
            cache.pop(layer.index, None)
        self.sweeps += 1
        return value

    def _block_value(self, layer_ids: list[int], ps: list, anchor, states: list, count: float) -> float:
        """``f + R`` of one W-block at the current weights: its layers' penalties (batch mean,
        reduced), ISGM's proximal term and the regulariser."""
        total = None
        for i in layer_ids:
            v = self.objective.layer_value(self.layers[i], states).sum()
            total = v if total is None else total + v
        f = float(self.reduce_fn([total.reshape(1)])[0][0]) / count
        if anchor is not None:
            f += 0.5 * self.prox_weight * sum(float((p - a).pow(2).sum()) for p, a in zip(ps, anchor))
        if self.objective.regularizer is not None:
            f += self.objective.regularizer.value(ps)
        return f

    def _backtracked_step(self, gi: int, layer_ids: list[int], ps: list, gs: list, anchor,
                          states: list, count: float) -> None:
        """One backtracked proximal-gradient step of block ``gi`` (module docstring); ``gs``
        includes ISGM's proximal gradient. The candidate is written into the parameters for the
        test (the weight hook's derived values held fixed) and undone when no step is accepted;
        an accepted step refreshes the hook."""
        f0 = sum(self._layer_values[i] for i in layer_ids)
        if anchor is not None:
            f0 += 0.5 * self.prox_weight * sum(float((p - a).pow(2).sum()) for p, a in zip(ps, anchor))
        reg = self.objective.regularizer
        if reg is not None:
            f0 += reg.value(ps)
        gsq = sum(float(g.pow(2).sum()) for g in gs)
        if not math.isfinite(gsq) or gsq <= 1e-10 * max(abs(f0), 1e-30):
            return  # stationary up to rounding (e.g. at the states of a forward pass)
        w0 = [p.detach().clone() for p in ps]
        s = self._trial[gi]
        for _ in range(self.max_backtracks):
            for p, w, g in zip(ps, w0, gs):
                p.copy_(w - s * g)
            if reg is not None:
                reg.prox(ps, [s] * len(ps))
            # the derived values (τ_k) stay those G was taken at: the test is of the function
            # G is the gradient of
            f1 = self._block_value(layer_ids, ps, anchor, states, count)
            moved = sum(float((p - w).pow(2).sum()) for p, w in zip(ps, w0))
            if math.isfinite(f1) and f1 <= f0 - moved / (4.0 * s):
                self._trial[gi] = self._next_trial(s, f0, f1, moved, ps, w0, gs)
                self._weights_changed(ps)
                return
            s *= 0.5
        # no decrease (rounding-level changes): keep the weights and the trial step, so one hard
        # block cannot shrink later steps to nothing
        for p, w in zip(ps, w0):
            p.copy_(w)

    def _next_trial(self, s: float, f0: float, f1: float, moved: float, ps, w0, gs) -> float:
        """Trial step of the block's next W-step after an accepted step ``d = θ⁺ − θ`` (``s``):
        ``1/c`` with ``c = 2(f(θ⁺) − f(θ) − ⟨G, d⟩)/‖d‖²`` the curvature of the block objective
        along ``d`` (the quadratic through ``f(θ)``, its slope and ``f(θ⁺)``; Nocedal & Wright
        §3.5), at most ``grow·s``; ``grow·s`` where that curvature is not positive. The
        acceptance test bounds ``1/c ≥ 2s/3``. Each block's trial step thus tracks its own
        curvature (the next trial is usually accepted at once), instead of halving down from
        a too-large ``s`` on every sweep or doubling up from a too-small one."""
        if moved <= 0:
            return s * self.grow
        slope = sum(float((g * (p - w)).sum()) for g, p, w in zip(gs, ps, w0))
        c = 2.0 * (f1 - f0 - slope) / moved
        if not (math.isfinite(c) and c > 0):
            return s * self.grow
        return min(1.0 / c, s * self.grow)

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
        for _ in range(self.sweeps_per_batch):
            self.solve_states(states, cache)
            value = self.weight_step(states, cache)
            cache.clear()      # the weights moved: every pre-activation is stale
        if from_store:
            store.scatter(ids, {s: states[s] for s in self.net.free_states})
        return value

    def _isgm_step(self, x, target) -> float:
        cache: dict = {}     # the forward pass's pre-activations serve the first sweep
        fwd = self.net.forward_states(x, pre_activations=cache)
        states = self.batch_states(x, target, {s: fwd[s] for s in self.net.free_states})
        anchor = [p.clone() for p in self.flat_params] if self.prox_weight > 0 else None
        first = None
        for _ in range(self.inner_sweeps):
            self.solve_states(states, cache)
            v = self.weight_step(states, cache, anchor=anchor)
            cache.clear()
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
            "maps": maps, "epoch": self.objective.epoch, "trial": list(self._trial),
        }

    def load_state_dict(self, d: dict) -> None:
        if d["solver"] != self.solver:
            raise ValueError(f"checkpoint: solver state is for {d['solver']!r}, not {self.solver!r}")
        self.sweeps = int(d["sweeps"])
        self._t = [float(t) for t in d["t"]]
        self._prev = None if d["prev"] is None else list(d["prev"])
        self._wvec = [None if v is None else list(v) for v in d["wvec"]]
        if "trial" in d:
            self._trial = [float(t) for t in d["trial"]]
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
