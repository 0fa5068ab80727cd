"""Layer-parallel block sweeps (method §2: given X, all W_l are independent; x^l couples only to
x^{l±1}): the per-layer loops of :class:`~lifted_inverse.lifted.solvers.LiftedSolver` become a
fixed number of batched kernels, independent of the depth.

Scope: *uniform chains*, the MLPs of lifted training — a head ``x^0 ↦ x^1`` (any input width),
a body of ``m ≥ 1`` layers ``ℝ^d → ℝ^d`` sharing activation and penalty (the head's too), and a
tail ``x^m+1 ↦ x^L`` (any output width and activation, e.g. softmax). Its free states alternate
between colour A ``{x^1, x^3, …}`` (outputs of the head and the odd body layers) and colour B
``{x^2, x^4, …}`` (outputs of the even body layers), each held as one tensor ``(n, B, d)``; the
body weights as two stacks ``W_E`` (even body layers, inputs in A) and ``W_O`` (odd, inputs in B):

* colour-A step: ``P_A = [W_h x^0 + b_h ; W_O X_B + b_O]`` (producers, one ``addmm`` + one
  ``baddbmm``), ``g = ∇_y^{smooth} P(X_A, P_A) + [W_Eᵀ ∇_z P(X_B, W_E X_A + b_E) ; W_tᵀ r_t]``,
  one prox over the whole stack with the per-state step ``1/(L_y + L_z‖W_c‖²)`` as ``(n, 1, 1)``;
* colour-B step: the same with the roles of E and O swapped (``W_O X_B + b_O`` is reused);
* W-block gradients ``Σ_i r_i x_iᵀ`` and ``Σ_i r_i``: one ``bmm`` and one sum per stack; in one
  process the ``bcd`` step ``W ← W − (s_l/n) Σ_i r_i x_iᵀ`` is instead one ``baddbmm_`` into the
  weight stack (the gradient is never written out); the data-Gram power iteration
  ``v ↦ Σ_i x̃_i x̃_iᵀ v`` of all layers two ``bmm`` per iteration (inputs zero-padded to one
  width); the ``‖W_c‖²`` refreshes one warm-started batched power-iteration step per stack;
* a mini-batch of a :class:`StateStore` is gathered and written back by one indexed copy (the
  chain's states are kept there as one ``(m+1, N, d)`` stack).

The pre-activations computed per sweep are the minimal ones (``2m + 2`` or ``2m + 3`` products of
``B × d × d``, as in the per-layer loop); what batching removes is the per-layer launch and Python
overhead, which dominates on CPU for small batches and on GPUs up to large ones. The arithmetic is
the parent's term for term (only summation order differs), which ``tests/test_batched_layers.py``
checks to 1e-10 in float64. Other networks (non-uniform widths, mixed activations, conv layers,
residual blocks) run the parent's per-layer path unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model import AffineLayer, LiftedNetwork
from .solvers import LiftedSolver, StateStore, identity_reduce


def batchable(net: LiftedNetwork, penalties=None) -> bool:
    """Whether ``net`` is a uniform chain (module docstring). Without ``penalties`` only the layers
    and activations are checked; with them, the head and body penalties must also agree."""
    return uniform_chain(net, penalties) is not None


@dataclass(frozen=True)
class ChainPlan:
    """A uniform chain split for the two-colour sweep (see module docstring)."""

    head: AffineLayer
    even: tuple[AffineLayer, ...]     # body layers 0, 2, 4, … : inputs in A, outputs in B
    odd: tuple[AffineLayer, ...]      # body layers 1, 3, …    : inputs in B, outputs in A
    tail: AffineLayer
    a_states: tuple[int, ...]         # x^1, x^3, …
    b_states: tuple[int, ...]         # x^2, x^4, …
    tail_in_a: bool                   # the tail reads the last A state (m even)

    @property
    def body(self) -> tuple[AffineLayer, ...]:
        return tuple(sorted(self.even + self.odd, key=lambda layer: layer.index))


def _act_key(act) -> tuple | None:
    if any(True for _ in act.parameters()):
        return None          # learnable activations differ per layer
    return type(act), act.extra_repr()


def uniform_chain(net: LiftedNetwork, penalties=None) -> ChainPlan | None:
    """The :class:`ChainPlan` of ``net`` or None when it is not a uniform chain."""
    layers = net.layers
    n = len(layers)
    if n < 3:
        return None
    for i, layer in enumerate(layers):
        if not isinstance(layer, AffineLayer) or not isinstance(layer.module, nn.Linear):
            return None
        if layer.inputs != (i,) or layer.output != i + 1 or layer.map.out_shape != layer.map.module_out_shape:
            return None
    head, body, tail = layers[0], layers[1:-1], layers[-1]
    w = body[0].weight
    d = w.shape[0]
    has_bias = body[0].module.bias is not None
    key = _act_key(body[0].activation)
    pen_key = None if penalties is None else (type(penalties[1]), penalties[1].name, penalties[1].scale)
    for layer in (head, *body):
        lw = layer.weight
        if key is None or _act_key(layer.activation) != key or lw.shape[0] != d \
                or (layer is not head and tuple(lw.shape) != (d, d)) \
                or (layer.module.bias is not None) != has_bias \
                or lw.dtype != w.dtype or lw.device != w.device:
            return None
        if penalties is not None:
            p = penalties[layer.index]
            if (type(p), p.name, p.scale) != pen_key:
                return None
    if tail.weight.dtype != w.dtype or tail.weight.device != w.device or tail.in_shape != (d,):
        return None
    a_states, b_states = tuple(range(1, n, 2)), tuple(range(2, n, 2))
    if [list(c) for c in net.colors] != [list(a_states), list(b_states)]:
        return None
    m = len(body)
    return ChainPlan(head, tuple(body[0::2]), tuple(body[1::2]), tail, a_states, b_states, m % 2 == 0)


def _stack(tensors) -> torch.Tensor:
    return torch.stack(list(tensors))


class _Sweep:
    """Stacked tensors of one batch sweep: the chain's free states ``S (m+1, B, d)`` in order
    (colour A = ``S[0::2]``, B = ``S[1::2]``, updated in place so that ``states[s]`` stay views),
    the body weights ``W (m, d, d)``, ``b (m, 1, d)`` (even layers ``W[0::2]``, odd ``W[1::2]``),
    and the pre-activations still valid (None once an input or weight changed)."""

    def __init__(self, plan: ChainPlan, states: list, weights: torch.Tensor | None = None,
                 biases: torch.Tensor | None = None, stacked: torch.Tensor | None = None):
        self.plan = plan
        self.m = len(plan.even) + len(plan.odd)
        self.x0 = states[0]
        self.target = states[-1]
        self.S = _stack(states[s] for s in range(1, self.m + 2)) if stacked is None else stacked
        body = plan.body
        self.W = _stack(layer.module.weight for layer in body) if weights is None else weights
        if body[0].module.bias is None:
            self.b = None
        else:
            self.b = (_stack(layer.module.bias for layer in body) if biases is None else biases).unsqueeze(1)
        self.views = {s: self.S[s - 1] for s in range(1, self.m + 2)}
        for s, v in self.views.items():
            states[s] = v
        self.z_head = None     # head pre-activation (B, d)
        self.z_e = None        # even body pre-activations (mE, B, d)
        self.z_o = None        # odd body pre-activations (mO, B, d)
        self.fresh = False     # built by from_forward with the current weights: all z valid

    @classmethod
    def from_forward(cls, plan: ChainPlan, states: list, weights: torch.Tensor,
                     biases: torch.Tensor | None) -> _Sweep:
        """The sweep at the forward pass of ``states[0]`` with the current weights,
        ``S[0] = σ(z_h)``, ``S[j+1] = σ(W_j S[j] + b_j)``, its pre-activations kept."""
        z_head = plan.head.pre_activation(states[0])
        m = len(plan.even) + len(plan.odd)
        sw = cls(plan, states, weights, biases, stacked=z_head.new_empty((m + 1, *z_head.shape)))
        act = plan.head.activation
        sw.S[0] = act(z_head)
        z_e = z_head.new_empty((len(plan.even), *z_head.shape))
        z_o = z_head.new_empty((len(plan.odd), *z_head.shape)) if plan.odd else None
        for j in range(m):
            z = (z_e if j % 2 == 0 else z_o)[j // 2]
            if sw.b is None:
                torch.mm(sw.S[j], sw.W[j].T, out=z)
            else:
                torch.addmm(sw.b[j], sw.S[j], sw.W[j].T, out=z)
            sw.S[j + 1] = act(z)
        sw.z_head, sw.z_e, sw.z_o = z_head, z_e, z_o
        sw.fresh = True
        return sw

    def matches(self, states: list) -> bool:
        return states[0] is self.x0 and states[-1] is self.target and \
            all(states[s] is v for s, v in self.views.items())

    @property
    def A(self) -> torch.Tensor:
        return self.S[0::2]

    @property
    def B(self) -> torch.Tensor:
        return self.S[1::2]

    def _affine(self, parity: int) -> torch.Tensor:
        """``W_j S[j] + b_j`` for the body layers ``j ≡ parity (mod 2)``, ``(n, B, d)``."""
        w = self.W[parity::2].transpose(1, 2)
        x = self.S[parity:self.m:2]
        return torch.bmm(x, w) if self.b is None else torch.baddbmm(self.b[parity::2], x, w)

    def head_z(self) -> torch.Tensor:
        if self.z_head is None:
            self.z_head = self.plan.head.pre_activation(self.x0)
        return self.z_head

    def even_z(self) -> torch.Tensor:
        if self.z_e is None:
            self.z_e = self._affine(0)
        return self.z_e

    def odd_z(self) -> torch.Tensor | None:
        if self.z_o is None and self.m > 1:
            self.z_o = self._affine(1)
        return self.z_o

    def tail_input(self) -> torch.Tensor:
        return self.S[self.m]

    def producers_a(self) -> torch.Tensor:
        """``P_A = [z_head ; Z_O]`` (nA, B, d)."""
        z_o = self.odd_z()
        zh = self.head_z().unsqueeze(0)
        return zh if z_o is None else torch.cat([zh, z_o])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


class BatchedLiftedSolver(LiftedSolver):
    """:class:`LiftedSolver` with layer-parallel kernels for uniform chains (module docstring);
    same arguments, same results. ``batched`` tells whether the network qualifies.

    ``cpu_batch_limit``: on CPU, batches larger than this run the per-layer path (there the
    products are BLAS-bound either way and the elementwise passes over the stacks fall out of
    cache); None: always stack. ``cpu_min_body``: on CPU, the solvers that keep the gradient form
    (all but single-process BCD, which fuses its W-step) run the per-layer path for bodies of
    fewer layers, where stacking has too little to batch. No limit applies on GPUs, where launch
    overhead dominates. Measurements: docs/scaling.md and docs/results.md.
    """

    def __init__(self, objective, *args, cpu_batch_limit: int | None = 128, cpu_min_body: int = 3,
                 **kwargs):
        super().__init__(objective, *args, **kwargs)
        self.cpu_batch_limit = cpu_batch_limit
        self.cpu_min_body = int(cpu_min_body)
        self._plan_for = None
        self._plan = None
        self._current: _Sweep | None = None     # stacks of the batch being swept
        self._stacked: dict = {}                # power-iteration vectors kept stacked
        self._param_stacks: dict = {}          # body weights / biases: (stack, parameter keys, parameters)
        self._grad_stacks: tuple | None = None  # (grads per layer, body W- and b-gradient stacks)
        self.batched = self.plan() is not None

    def plan(self, states: list | None = None) -> ChainPlan | None:
        """The chain plan for the current penalties (rebuilt when the homotopy replaces them);
        None for the per-state ``'backward'`` order, for W-blocks that are not one affine layer
        each (shared or backtracked weights), when the network is not a uniform chain or, on
        CPU, the batch ``states`` exceeds
        ``cpu_batch_limit`` or a solver other than BCD meets a body shorter than ``cpu_min_body``."""
        if self.state_order == "backward" or self.grouped:   # per-state sweeps, shared weights
            return None
        pens = self.objective.penalties
        if pens is not self._plan_for:
            self._plan, self._plan_for = uniform_chain(self.net, pens), pens
        plan = self._plan
        if states is not None and plan is not None and states[0].device.type == "cpu":
            if self.cpu_batch_limit is not None and states[0].shape[0] > self.cpu_batch_limit:
                return None
            if self.solver != "bcd" and len(plan.even) + len(plan.odd) < self.cpu_min_body:
                return None
        return plan

    def body_weights(self, plan: ChainPlan) -> torch.Tensor:
        """The body weights ``W (m, d, d)`` as a stack kept between sweeps: the solver's updates
        write it and copy its rows back into the parameters (:meth:`_write_back`); it is stacked
        again only when a parameter changed elsewhere (its version counter, storage, dtype or
        device moved). The parameters stay the users' tensors with their own storage."""
        return self._persistent_stack("weight", [layer.module.weight for layer in plan.body])

    def body_biases(self, plan: ChainPlan) -> torch.Tensor | None:
        """The body biases ``b (m, d)`` as one persistent stack (as :meth:`body_weights`)."""
        if plan.body[0].module.bias is None:
            return None
        return self._persistent_stack("bias", [layer.module.bias for layer in plan.body])

    @staticmethod
    def _param_keys(params: list) -> list[tuple]:
        return [(p.data_ptr(), p._version, p.dtype, p.device, p.shape) for p in params]

    def _persistent_stack(self, key: str, params: list) -> torch.Tensor:
        held = self._param_stacks.get(key)
        keys = self._param_keys(params)
        if held is not None:
            st, known, _ = held
            if known == keys:
                return st
            if st.shape == (len(params), *params[0].shape) and st.dtype == params[0].dtype \
                    and st.device == params[0].device:
                torch.stack([p.detach() for p in params], out=st)   # same stack object: sweeps keep it
                self._param_stacks[key] = (st, keys, params)
                return st
        st = _stack(p.detach() for p in params)
        self._param_stacks[key] = (st, keys, params)
        return st

    @torch.no_grad()
    def _write_back(self) -> None:
        """Copy the body stacks, just updated in place, into the parameters' own storage."""
        for key, (st, _, params) in self._param_stacks.items():
            torch._foreach_copy_(params, list(st.unbind(0)))
            self._param_stacks[key] = (st, self._param_keys(params), params)

    def _buffer(self, key, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """A tensor kept between sweeps for outputs of the same shape (a fresh megabyte-sized
        output per sweep pays its page faults again on CPU)."""
        buf = self._stacked.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._stacked[key] = like.new_empty(shape)
        return buf

    def _restack(self, key, rows: list[torch.Tensor]) -> torch.Tensor:
        """``stack(rows)``, reusing the stack whose row views these still are."""
        hit = self._stacked.get(key)
        if hit is not None and len(hit[1]) == len(rows) and all(a is b for a, b in zip(hit[1], rows)):
            return hit[0]
        return _stack(rows)

    # ---- ‖W_c‖² of the consumers (state step sizes) ------------------------------------------
    def _refresh_norms(self, groups: list) -> list[list[float]]:
        """``‖W_l‖²`` for groups ``(layers, W (G, d_out, d_in))`` sharing ``d_in`` (the body stack,
        the tail), kept in each layer's :class:`LinearMap` cache: one warm-started power-iteration
        step for every group whose layers are all stale (as ``LinearMap.norm_sq`` does per layer),
        one host read for all; the per-layer path for first calls or mixed staleness."""
        out: list = [None] * len(groups)
        stacked = []                                   # (group, maps, keys, W)
        for gi, (layers, w) in enumerate(groups):
            maps = [layer.map for layer in layers]
            keys = [(v.data_ptr(), v._version, v.dtype, v.device) for v in (m.weight for m in maps)]
            stale = [k != m._cache_key for k, m in zip(keys, maps)]
            if not any(stale):
                out[gi] = [m._norm_sq for m in maps]
            elif all(stale) and all(m._cache_key is not None and m._vec.dtype == w.dtype
                                    and m._vec.device == w.device for m in maps):
                stacked.append((gi, maps, keys, w))
            else:
                out[gi] = [m.norm_sq() for m in maps]
        if not stacked:
            return out
        v = self._restack("norm", [m._vec for _, maps, _, _ in stacked for m in maps])   # (G, d_in)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
        parts, start = [], 0
        for _, maps, _, w in stacked:
            vg = v[start:start + len(maps)].unsqueeze(1)
            parts.append(torch.bmm(torch.bmm(vg, w.transpose(1, 2)), w).squeeze(1))
            start += len(maps)
        wv = parts[0] if len(parts) == 1 else torch.cat(parts)
        lam = (v * wv).sum(dim=1)
        n = wv.norm(dim=1, keepdim=True)
        v = torch.where(n > 0, wv / n.clamp_min(torch.finfo(n.dtype).tiny), v)
        values = torch.where(n.squeeze(1) > 0, lam, torch.zeros_like(lam)).tolist()
        rows = list(v.unbind(0))
        self._stacked["norm"] = (v, rows)
        start = 0
        for gi, maps, keys, _ in stacked:
            out[gi] = values[start:start + len(maps)]
            for m, k, row, val in zip(maps, keys, rows[start:], out[gi]):
                m._vec, m._norm_sq, m._cache_key = row, val, k
            start += len(maps)
        return out

    def _step_sizes(self, plan: ChainPlan, sw: _Sweep) -> tuple:
        """Per-state steps ``t = state_lr/(L_y(P_p) + L_z(P_c)‖W_c‖²)`` of colours A and B, each
        ``(n, 1, 1)``, or a number when the colour is one state (a short chain: no tensor step
        to check and broadcast)."""
        pens = self.objective.penalties
        pen, act = pens[plan.head.index], plan.head.activation
        norms, (tail_norm,) = self._refresh_norms([(plan.body, sw.W), ([plan.tail], plan.tail.weight.unsqueeze(0))])
        lt = pens[plan.tail.index].lipschitz_z(plan.tail.activation) * tail_norm
        ly, lz = pen.lipschitz_y(act), pen.lipschitz_z(act)
        la = [ly + lz * v for v in norms[0::2]] + ([ly + lt] if plan.tail_in_a else [])
        lb = [ly + lz * v for v in norms[1::2]] + ([] if plan.tail_in_a else [ly + lt])
        steps = [self.state_lr / max(lip, 1e-12) for lip in la + lb]
        if len(la) == 1 or len(lb) == 1:
            return tuple(c[0] if len(c) == 1 else torch.tensor(c, dtype=sw.S.dtype, device=sw.S.device).view(-1, 1, 1)
                         for c in (steps[:len(la)], steps[len(la):]))
        steps = torch.tensor(steps, dtype=sw.S.dtype, device=sw.S.device).view(-1, 1, 1)
        return steps[:len(la)], steps[len(la):]

    # ---- block 1: states ----------------------------------------------------------------------
    @torch.no_grad()
    def update_states(self, states: list, cache: dict | None = None) -> None:
        plan = self.plan(states)
        if plan is None:
            return super().update_states(states, cache)
        cache = {} if cache is None else cache
        sw = self._sweep(plan, states, cache)
        if not sw.fresh:
            sw.z_head = sw.z_e = sw.z_o = None   # weights may have changed since it was built
        sw.fresh = False
        pens = self.objective.penalties
        pen, act = pens[plan.head.index], plan.head.activation
        pen_t, act_t = pens[plan.tail.index], plan.tail.activation
        t_a, t_b = self._step_sizes(plan, sw)
        m_e, m_o = len(plan.even), len(plan.odd)

        def prox_step(x, z_p, adj, t):
            """``x ← prox_{t P^{ns}}(x − t(∇_y^{smooth} P(x, z_p) + adj))`` on a stack (n, B, d)."""
            g = pen.grad_y_smooth(act, _flat(x), _flat(z_p)).view_as(adj) + adj
            n, bsz, d = adj.shape
            v = _flat(x - t * g)
            t = t if isinstance(t, float) else t.expand(n, bsz, 1).reshape(n * bsz, 1)
            return pen.prox_y(act, v, t).view(n, bsz, d)

        def consumer_adjoint(parity, outputs, z, tail_here):
            """``[W_cᵀ ∇_z P_c]`` of the body consumers of one colour, then the tail's."""
            r = pen.grad_z(act, _flat(outputs), _flat(z)).view_as(z)
            adj = torch.bmm(r, sw.W[parity::2])
            if tail_here:
                r_t = pen_t.grad_z(act_t, sw.target, plan.tail.pre_activation(sw.tail_input()))
                adj = torch.cat([adj, plan.tail.input_adjoint(0, r_t).unsqueeze(0)])
            return adj

        def colour_a():
            """Producers head + odd body layers, consumers even body layers (+ tail if m even)."""
            z_p = sw.producers_a()
            for k in range(self.state_steps):
                if k > 0:                        # Z_E = W_E X_A + b_E is current on entry
                    sw.z_e = None
                adj = consumer_adjoint(0, sw.B[:m_e], sw.even_z(), plan.tail_in_a)
                sw.A.copy_(prox_step(sw.A, z_p, adj, t_a))
            sw.z_e = None

        def colour_b():
            """Producers even body layers, consumers odd body layers (+ tail if m odd)."""
            z_p = sw.even_z()
            for k in range(self.state_steps):
                if k > 0:
                    sw.z_o = None
                if m_o:
                    adj = consumer_adjoint(1, sw.A[1:], sw.odd_z(), not plan.tail_in_a)
                else:   # m = 1: the only B state feeds the tail
                    r_t = pen_t.grad_z(act_t, sw.target, plan.tail.pre_activation(sw.tail_input()))
                    adj = plan.tail.input_adjoint(0, r_t).unsqueeze(0)
                sw.B.copy_(prox_step(sw.B, z_p, adj, t_b))
            sw.z_o = None

        for colour in ((colour_a, colour_b) if self.state_order == "bottom-up" else (colour_b, colour_a)):
            colour()

    @torch.no_grad()
    def state_value(self, states: list, cache: dict | None = None) -> float:
        """The parent's ``F(X)`` from the chain's stacks: the head, body and tail penalties
        summed over the batched pre-activations."""
        plan = self.plan(states)
        if plan is None:
            return super().state_value(states, cache)
        sw = self._sweep(plan, states, {} if cache is None else cache)
        pens = self.objective.penalties
        pen, act = pens[plan.head.index], plan.head.activation
        pen_t, act_t = pens[plan.tail.index], plan.tail.activation
        total = pen.value(act, _flat(sw.A), _flat(sw.producers_a())).sum() \
            + pen.value(act, _flat(sw.B), _flat(sw.even_z())).sum() \
            + pen_t.value(act_t, sw.target, plan.tail.pre_activation(sw.tail_input())).sum()
        return self._reduced_mean(total, sw.x0.shape[0])

    # ---- one sweep on a batch ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, x: torch.Tensor, target: torch.Tensor, store: StateStore | None = None,
             ids: torch.Tensor | None = None) -> float:
        """The parent's sweep; for a chain and a mini-batch of ``store`` the chain's states are
        one stack ``(m+1, N, d)`` in the store (its per-state tensors become rows), so the batch is
        gathered by one ``index_select`` and written back by one ``index_copy_``."""
        plan = self.plan([x])
        if self.sweeps_per_batch > 1:
            return super().step(x, target, store, ids)
        if plan is not None and self.state_init == "forward" and self.solver != "isgm":
            states = self.batch_states(x, target, {})
            cache = {"chain": _Sweep.from_forward(plan, states, self.body_weights(plan), self.body_biases(plan))}
            self.solve_states(states, cache)
            return self.weight_step(states, cache)
        if plan is None or self.state_init == "forward" or store is None or ids is None:
            return super().step(x, target, store, ids)
        stack = self._store_stack(store, plan)
        chain = self._chain_states(plan)
        batch = stack.index_select(1, ids)
        states = self.batch_states(x, target, {s: batch[i] for i, s in enumerate(chain)})
        cache = {"chain": _Sweep(plan, states, self.body_weights(plan), self.body_biases(plan), stacked=batch)}
        self.solve_states(states, cache)
        value = self.weight_step(states, cache)
        stack.index_copy_(1, ids, batch)
        return value

    @staticmethod
    def _chain_states(plan: ChainPlan) -> range:
        return range(1, len(plan.even) + len(plan.odd) + 2)

    def _store_stack(self, store: StateStore, plan: ChainPlan) -> torch.Tensor:
        """``store``'s chain states as one persistent ``(m+1, N, d)`` stack whose rows they are
        (stacked once; again whenever a state tensor was replaced)."""
        rows = [store.states[s] for s in self._chain_states(plan)]
        held = self._stacked.get("store")
        if held is not None:
            st, ptrs = held
            if len(ptrs) == len(rows) and all(r.data_ptr() == p and r.shape == st.shape[1:] and r.dtype == st.dtype
                                              for r, p in zip(rows, ptrs)):
                return st
        st = _stack(rows)
        for i, s in enumerate(self._chain_states(plan)):
            store.states[s] = st[i]
        self._stacked["store"] = (st, [st[i].data_ptr() for i in range(len(rows))])
        return st

    # ---- block 2: weights ---------------------------------------------------------------------
    def _sweep(self, plan: ChainPlan, states: list, cache: dict) -> _Sweep:
        sw = cache.get("chain")
        if sw is None or not sw.matches(states):
            sw = _Sweep(plan, states, self.body_weights(plan), self.body_biases(plan))
        self._current = cache["chain"] = sw
        return sw

    def _residuals(self, plan: ChainPlan, states: list, cache: dict):
        """Everything the W-blocks need at the current states: the sweep, the summed objective
        (a tensor), the head residual ``r_h (B, d)``, per body parity ``(layers, R (n, B, d),
        X (n, B, d))`` with ``G_l = Σ_i r_i x_iᵀ``, and the tail's input and residual."""
        sw = self._sweep(plan, states, cache)
        pens = self.objective.penalties
        pen, act = pens[plan.head.index], plan.head.activation
        pen_t, act_t = pens[plan.tail.index], plan.tail.activation
        z_a, z_e = sw.producers_a(), sw.even_z()
        v_a, r_a = pen.value_and_grad_z(act, _flat(sw.A), _flat(z_a))
        v_e, r_e = pen.value_and_grad_z(act, _flat(sw.B), _flat(z_e))
        r_a, r_e = r_a.view_as(z_a), r_e.view_as(z_e)
        x_t = sw.tail_input()
        v_t, r_t = pen_t.value_and_grad_z(act_t, sw.target, plan.tail.pre_activation(x_t))
        value = v_a.sum() + v_e.sum() + v_t.sum()
        body = [(layers, r, x) for layers, r, x in ((plan.even, r_e, sw.S[0:sw.m:2]), (plan.odd, r_a[1:], sw.S[1:sw.m:2]))
                if layers]
        return sw, value, r_a[0], body, x_t, r_t

    @torch.no_grad()
    def _gradients(self, states: list, cache: dict):
        plan = self.plan(states)
        if plan is None:
            return super()._gradients(states, cache)
        sw, value, r_head, body, x_t, r_t = self._residuals(plan, states, cache)
        bias = sw.b is not None
        grads: list = [None] * len(self.layers)
        grads[plan.head.index] = plan.head.weight_grad(sw.x0, r_head)
        stacks = []                     # (layers, W-gradient stack, b-gradient stack) per parity
        for layers, r, x in body:
            gw = torch.bmm(r.transpose(1, 2), x, out=self._buffer(("gw", len(stacks)), (len(layers), *sw.W.shape[1:]), x))
            gb = r.sum(dim=1) if bias else None
            stacks.append((layers, gw, gb))
            for i, layer in enumerate(layers):
                grads[layer.index] = [gw[i], gb[i]] if bias else [gw[i]]
        grads[plan.tail.index] = plan.tail.weight_grad(x_t, r_t)
        stats = torch.stack([torch.as_tensor(float(sw.x0.shape[0]), dtype=value.dtype, device=value.device),
                             value])
        sent = [g for gs in grads for g in gs]
        flat = self.reduce_fn(sent + [stats])
        count, total = (float(v) for v in flat[-1].tolist())
        if all(a is b for a, b in zip(flat, sent)):
            # nothing was copied (one process): scale the stacks, whose rows the gradients are
            ends = [g for gs in (grads[plan.head.index], grads[plan.tail.index]) for g in gs]
            torch._foreach_div_(ends + [t for _, gw, gb in stacks for t in (gw, gb) if t is not None], count)
            self._grad_stacks = (grads, stacks)
            return grads, count, total / count
        self._grad_stacks = None
        grads_flat = list(flat[:-1])
        torch._foreach_div_(grads_flat, count)          # fresh tensors from the reduce
        it = iter(grads_flat)
        return [[next(it) for _ in gs] for gs in grads], count, total / count

    @torch.no_grad()
    def weight_step(self, states: list, cache: dict | None = None,
                    anchor: list[torch.Tensor] | None = None) -> float:
        plan = self.plan(states)
        if plan is None or self.solver != "bcd" or anchor is not None or self.reduce_fn is not identity_reduce:
            return super().weight_step(states, cache, anchor)
        return self._fused_bcd_step(plan, states, {} if cache is None else cache)

    def _fused_bcd_step(self, plan: ChainPlan, states: list, cache: dict) -> float:
        """The parent's ``bcd`` W-step in one process, each body stack updated by one product,
        ``W ← W − Σ_i (s_l/n) r_i x_iᵀ`` (``baddbmm_``; ``G_l`` is never written out), ``s_l`` the
        step ``lr/L_l``. Data-parallel runs keep the gradient form: it is what ranks all-reduce."""
        sw, value, r_head, body, x_t, r_t = self._residuals(plan, states, cache)
        count = float(sw.x0.shape[0])
        steps = [self.lr / max(lip, 1e-12) for lip in self._data_lipschitz(states, count)]
        for end, x, r in ((plan.head, sw.x0, r_head), (plan.tail, x_t, r_t)):   # Linear layers
            alpha = -steps[end.index] / count
            end.module.weight.addmm_(r.t(), x, alpha=alpha)
            if end.module.bias is not None:
                end.module.bias.add_(r.sum(dim=0), alpha=alpha)
        for parity, (layers, r, x) in enumerate(body):      # sw.W, sw.b: the persistent stacks
            scale = torch.tensor([-steps[layer.index] / count for layer in layers], dtype=r.dtype, device=r.device)
            rs = r * scale.view(-1, 1, 1)
            sw.W[parity::2].baddbmm_(rs.transpose(1, 2), x)
            if sw.b is not None:
                sw.b[parity::2].add_(rs.sum(dim=1, keepdim=True))
        self._write_back()
        if self.objective.regularizer is not None:
            self.objective.regularizer.prox(self.flat_params, [st for st, ps in zip(steps, self.params) for _ in ps])
        self.sweeps += 1
        return float(value) / count

    def _descend(self, grads: list[list[torch.Tensor]], steps: list[float]) -> None:
        """``θ_l ← θ_l − s_l G_l``: head and tail per tensor, the body as one in-place
        ``addcmul_`` per stack and parity when ``grads`` are rows of this sweep's gradient stacks."""
        held = self._grad_stacks
        self._grad_stacks = None
        plan = self._plan
        if held is None or held[0] is not grads or plan is None:
            return super()._descend(grads, steps)
        _, stacks = held
        for end in (plan.head, plan.tail):
            for p, g in zip(self.params[end.index], grads[end.index]):
                p.add_(g, alpha=-steps[end.index])
        w_stack, b_stack = self.body_weights(plan), self.body_biases(plan)
        for parity, (layers, gw, gb) in enumerate(stacks):
            s = torch.tensor([steps[layer.index] for layer in layers], dtype=gw.dtype, device=gw.device)
            w_stack[parity::2].addcmul_(gw, s.view(-1, 1, 1), value=-1)
            if gb is not None:
                b_stack[parity::2].addcmul_(gb, s.view(-1, 1), value=-1)
        self._write_back()

    def _data_lipschitz(self, states: list, count: float) -> list[float]:
        """``L_z(P_l)·λ_max(Σ_i x̃_i x̃_iᵀ)/count`` per layer (the parent's warm-started power
        iteration) for all layers in one stack: inputs ``x̃ = [x, 1]`` zero-padded to a common width
        ``(L, B, D + 1)`` (padding adds zeros to every product and norm, so the iterates are the
        parent's), two ``bmm`` and one ``reduce_fn`` call per iteration."""
        plan = self.plan(states)
        if plan is None:
            return super()._data_lipschitz(states, count)
        sw = self._sweep(plan, states, {"chain": self._current})
        layers = [plan.head, *plan.body, plan.tail]
        x = self._gram_inputs(plan, sw, layers)
        width = x.shape[-1] - 1                       # column ``width``: the 1 of biased layers
        held = self._gram_vectors
        if held is not None and held[1] == layers and held[0].shape == x.shape[::2]:
            v, first = held[0], False                 # this path's own stack, rows not split
        else:
            first = any(v is None for v in self._wvec)
            for i, layer in enumerate(self.layers):
                if self._wvec[i] is None:
                    self._wvec[i] = layer.weight_probe()
            v = x.new_zeros(x.shape[0], width + 1)
            for row, layer in zip(v, layers):
                e = self._wvec[layer.index]
                row[:e[0].shape[0]] = e[0]
                if len(e) > 1:
                    row[width] = e[1]
        lam = None
        for _ in range(20 if first else self.power_iterations):
            v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
            # Σ_i x̃_i x̃_iᵀ v as (vᵀ X̃ᵀ) X̃: row-vector products (bmm with one column is much
            # slower on CPU)
            out = self._reduce_rows(torch.bmm(torch.bmm(v.unsqueeze(1), x.transpose(1, 2)), x).squeeze(1), layers)
            lam = (v * out).sum(dim=1)
            v = out
        pens = self.objective.penalties
        out_l = [0.0] * len(self.layers)
        for layer, val in zip(layers, lam.tolist()):
            out_l[layer.index] = pens[layer.index].lipschitz_z(layer.activation) * max(val, 0.0) / count
        self._gram_vectors = (v, layers)       # split into ``_wvec`` rows only when read
        return out_l

    @property
    def _wvec(self) -> list:
        """The parent's per-layer power-iteration vectors; the batched path keeps them as one
        stack ``(L, D + 1)`` and splits it here, on first read (checkpoints, the per-layer path)."""
        held = self.__dict__.get("_gram_vectors")
        if held is not None:
            v, layers = held
            width = v.shape[1] - 1
            vecs = self.__dict__["_wvec_rows"]
            for layer, row in zip(layers, v.unbind(0)):
                d_in = layer.weight.shape[1]
                vecs[layer.index] = [row[:d_in], row[width]] if layer.module.bias is not None else [row[:d_in]]
            self.__dict__["_gram_vectors"] = None
        return self.__dict__["_wvec_rows"]

    @_wvec.setter
    def _wvec(self, value: list) -> None:
        self.__dict__["_wvec_rows"] = value
        self.__dict__["_gram_vectors"] = None

    def _gram_inputs(self, plan: ChainPlan, sw: _Sweep, layers: list) -> torch.Tensor:
        """``X̃ (L, B, D + 1)``: the inputs of head, body and tail, zero-padded to ``D`` columns,
        then 1 (biased layers) or 0; a kept buffer whose padding stays zero."""
        x0, m = sw.x0, sw.m
        width = max(x0.shape[1], sw.S.shape[-1])
        shape = (len(layers), x0.shape[0], width + 1)
        buf = self._stacked.get("gram_x")
        if buf is None or tuple(buf.shape) != shape or buf.dtype != x0.dtype or buf.device != x0.device:
            buf = self._stacked["gram_x"] = x0.new_zeros(shape)
            for i, layer in enumerate(layers):
                if layer.module.bias is not None:
                    buf[i, :, width] = 1
        d0, d = x0.shape[1], sw.S.shape[-1]
        buf[0, :, :d0] = x0
        buf[1:m + 1, :, :d] = sw.S[:m]
        buf[m + 1, :, :d] = sw.tail_input()
        return buf

    def _reduce_rows(self, out: torch.Tensor, layers: list) -> torch.Tensor:
        """``reduce_fn`` of the Gram products, sending each layer's ``d_in (+ 1)`` entries only
        (the padding is zero on every rank)."""
        if self.reduce_fn is identity_reduce:
            return out
        width = out.shape[1] - 1
        parts = []
        for row, layer in zip(out, layers):
            parts.append(row[:layer.weight.shape[1]])
            if layer.module.bias is not None:
                parts.append(row[width:])
        summed = iter(self.reduce_fn(parts))
        full = torch.zeros_like(out)
        for row, layer in zip(full, layers):
            row[:layer.weight.shape[1]] = next(summed)
            if layer.module.bias is not None:
                row[width:] = next(summed)
        return full
