"""Layer-parallel block sweeps (method §2, "given X, all W_l are independent; x^l couples only
to x^{l±1}"): the per-layer loops of :class:`~lifted_inverse.lifted.solvers.LiftedSolver` become a
few batched kernels.

:class:`BatchedLiftedSolver` is a :class:`LiftedSolver` (same update rules, restarts, Adam, ISGM,
checkpoints, ``reduce_fn``) whose three per-layer loops run on *groups* of equal-shape layers:

* pre-activations of a group ``g`` of ``G`` layers ``z_l = W_l x^{l−1} + b_l`` are one
  ``torch.baddbmm`` on stacked tensors ``X (G, B, d_in)``, ``W (G, d_out, d_in)``, ``b (G, 1, d_out)``;
* W-block gradients ``Σ_i r_i^l (x_i^{l−1})ᵀ`` and ``Σ_i r_i^l`` (``r^l = ∇_z P_l``): one ``bmm`` and one
  sum per group; penalty values/gradients are evaluated once on the ``(G·B, d_out)`` stack;
* the W-block Lipschitz power iteration ``v ↦ Σ_i x̃_i x̃_iᵀ v`` (``x̃ = [x; 1]``): two ``bmm`` per group
  and iteration, with one host synchronisation per iteration instead of one per layer;
* state blocks: in each colour group (odd / even states of a chain), the states whose producers
  lie in one layer group and whose consumers lie in one layer group take their proximal-gradient
  step together: ``g = ∇_y^{smooth} P_p(X, Z_p) + R_c W_c`` (one ``bmm``), step ``1/L`` per state as a
  ``(G, 1, 1)`` tensor, one prox call.

Layers are grouped by the signature (weight shape, bias presence, dtype, activation, penalty);
the stacking copies ``G·d_out·d_in`` weights per sweep, negligible next to the ``B·G·d_out·d_in``
products for batches ``B ≳ 16``. The math is that of the parent class term for term (only the
floating-point summation order differs), which ``tests/test_batched_layers.py`` checks to 1e-10.

Scope: networks whose lifted layers are all :class:`AffineLayer` s over ``nn.Linear`` with flat
states (MLPs). Other networks (conv layers, residual skip layers, reshapes) run the parent's
per-layer path unchanged — grouped convolutions are not implemented.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import AffineLayer
from .solvers import LiftedSolver


def _signature(layer: AffineLayer, penalty) -> tuple:
    w = layer.weight
    act = layer.activation
    return (tuple(w.shape), layer.module.bias is not None, w.dtype, w.device, type(act), act.extra_repr(),
            type(penalty), penalty.name, penalty.scale)


def batchable(net) -> bool:
    """Whether every lifted layer is a flat ``nn.Linear`` affine layer with one input state and every
    free state feeds exactly one such layer (the chain structure :class:`BatchedLiftedSolver` batches)."""
    for layer in net.layers:
        if not isinstance(layer, AffineLayer) or not isinstance(layer.module, nn.Linear):
            return False
        if layer.map.out_shape != layer.map.module_out_shape or len(layer.in_shape) != 1:
            return False
    return all(len(net.consumers[s]) == 1 and net.consumers[s][0][1] == 0 for s in net.free_states)


class BatchedLiftedSolver(LiftedSolver):
    """:class:`LiftedSolver` with layer-parallel kernels (see module docstring); same arguments."""

    def __init__(self, objective, *args, **kwargs):
        super().__init__(objective, *args, **kwargs)
        self.batched = batchable(self.net)

    # ---- grouping (penalties depend on the epoch through the homotopy, so recomputed) ---------
    def _layer_groups(self) -> list[list[AffineLayer]]:
        pens = self.objective.penalties
        groups: dict[tuple, list] = {}
        for layer in self.layers:
            groups.setdefault(_signature(layer, pens[layer.index]), []).append(layer)
        return list(groups.values())

    def _state_groups(self, colour: list[int]) -> list[list[int]]:
        net, pens = self.net, self.objective.penalties
        groups: dict[tuple, list] = {}
        for s in colour:
            p, c = net.producer[s], net.consumers[s][0][0]
            # producers may differ in input width (their Z are computed per weight shape and
            # stacked); consumers must share one weight shape for the adjoint bmm
            key = (p.out_shape, _signature(p, pens[p.index])[2:], _signature(c, pens[c.index]))
            groups.setdefault(key, []).append(s)
        return list(groups.values())

    # ---- stacked helpers ---------------------------------------------------------------------
    @staticmethod
    def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
        return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)

    def _weights(self, layers, cache) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked ``W (G, d_out, d_in)`` and ``b (G, 1, d_out)`` (cached for the sweep)."""
        key = ("W",) + tuple(layer.index for layer in layers)
        hit = cache.get(key)
        if hit is None:
            w = self._stack([layer.module.weight for layer in layers])
            b = None if layers[0].module.bias is None else \
                self._stack([layer.module.bias for layer in layers]).unsqueeze(1)
            hit = cache[key] = (w, b)
        return hit

    def _z_stack(self, layers, states, cache) -> torch.Tensor:
        """``Z (G, B, d_out)`` of layers with equal output width; reuses/feeds the per-layer ``cache``.

        Missing pre-activations are computed by one ``baddbmm`` per distinct weight shape.
        """
        missing: dict[tuple, list] = {}
        for layer in layers:
            if layer.index not in cache:
                key = (tuple(layer.weight.shape), layer.module.bias is not None)
                missing.setdefault(key, []).append(layer)
        for part in missing.values():
            w, b = self._weights(part, cache)
            x = self._stack([states[layer.inputs[0]] for layer in part])
            z = torch.bmm(x, w.transpose(1, 2)) if b is None else torch.baddbmm(b, x, w.transpose(1, 2))
            if len(part) == len(layers):
                for i, layer in enumerate(part):
                    cache[layer.index] = z[i]
                return z
            for i, layer in enumerate(part):
                cache[layer.index] = z[i]
        return self._stack([cache[layer.index] for layer in layers])

    def _penalty_terms(self, layers, states, cache, value: bool):
        """``(R, total)``: ``R = ∇_z P`` stacked ``(G, B, d_out)`` and ``Σ P`` over the group (or None)."""
        pen = self.objective.penalties[layers[0].index]
        act = layers[0].activation
        z = self._z_stack(layers, states, cache)
        y = self._stack([states[layer.output] for layer in layers])
        g, bsz, d = z.shape
        zf, yf = z.reshape(g * bsz, d), y.reshape(g * bsz, d)
        r = pen.grad_z(act, yf, zf).view(g, bsz, d)
        total = pen.value(act, yf, zf).sum() if value else None
        return r, total

    # ---- block 1: states ----------------------------------------------------------------------
    @torch.no_grad()
    def update_states(self, states: list, cache: dict | None = None) -> None:
        if not self.batched:
            return super().update_states(states, cache)
        net, pens = self.net, self.objective.penalties
        cache = {} if cache is None else cache
        for colour in net.colors:
            for group in self._state_groups(colour):
                producers = [net.producer[s] for s in group]
                consumers = [net.consumers[s][0][0] for s in group]
                pen_p, act_p = pens[producers[0].index], producers[0].activation
                pen_c, act_c = pens[consumers[0].index], consumers[0].activation
                z_p = self._z_stack(producers, states, cache)
                G, bsz, d = z_p.shape
                z_pf = z_p.reshape(G * bsz, d)
                w_c, _ = self._weights(consumers, cache)
                for _ in range(self.state_steps):
                    x = self._stack([states[s] for s in group])
                    grad = pen_p.grad_y_smooth(act_p, x.reshape(G * bsz, d), z_pf).view(G, bsz, d)
                    r, _ = self._penalty_terms(consumers, states, cache, value=False)
                    grad = torch.baddbmm(grad, r, w_c)
                    lips = [pen_p.lipschitz_y(act_p) + pen_c.lipschitz_z(act_c) * c.input_lipschitz(0)
                            for c in consumers]
                    t = torch.tensor([1.0 / max(lip, 1e-12) for lip in lips], dtype=x.dtype,
                                     device=x.device).view(G, 1, 1)
                    v = (x - t * grad).reshape(G * bsz, d)
                    new = pen_p.prox_y(act_p, v, t.expand(G, bsz, 1).reshape(G * bsz, 1)).view(G, bsz, d)
                    for i, (s, c) in enumerate(zip(group, consumers)):
                        states[s] = new[i]
                        cache.pop(c.index, None)

    # ---- block 2: weights ---------------------------------------------------------------------
    @torch.no_grad()
    def _gradients(self, states: list, cache: dict):
        if not self.batched:
            return super()._gradients(states, cache)
        grads: list = [None] * len(self.layers)
        value = None
        for layers in self._layer_groups():
            r, v = self._penalty_terms(layers, states, cache, value=True)
            x = self._stack([states[layer.inputs[0]] for layer in layers])
            gw = torch.bmm(r.transpose(1, 2), x)
            gb = r.sum(dim=1) if layers[0].module.bias is not None else None
            for i, layer in enumerate(layers):
                grads[layer.index] = [gw[i]] + ([gb[i]] if gb is not None else [])
            value = v if value is None else value + v
        ref = states[0]
        stats = torch.stack([torch.as_tensor(float(ref.shape[0]), dtype=value.dtype, device=value.device),
                             value])
        flat = self.reduce_fn([g for gs in grads for g in gs] + [stats])
        count, total = float(flat[-1][0]), float(flat[-1][1])
        it = iter(flat[:-1])
        grads = [[next(it) / count for _ in gs] for gs in grads]
        return grads, count, total / count

    def _data_lipschitz(self, states: list, count: float) -> list[float]:
        if not self.batched:
            return super()._data_lipschitz(states, count)
        pens = self.objective.penalties
        first = any(v is None for v in self._wvec)
        for i, layer in enumerate(self.layers):
            if self._wvec[i] is None:
                self._wvec[i] = layer.weight_probe()
        iters = 20 if first else self.power_iterations
        groups = self._layer_groups()
        xs = [self._stack([states[layer.inputs[0]] for layer in layers]) for layers in groups]
        has_b = [layers[0].module.bias is not None for layers in groups]
        vw = [self._stack([self._wvec[layer.index][0] for layer in layers]) for layers in groups]
        vb = [self._stack([self._wvec[layer.index][1] for layer in layers]) if hb else None
              for layers, hb in zip(groups, has_b)]
        lams = [None] * len(groups)
        for _ in range(iters):
            outs = []
            for j, x in enumerate(xs):
                sq = (vw[j] * vw[j]).sum(dim=1) + (vb[j] * vb[j] if has_b[j] else 0.0)
                n = sq.sqrt()
                n = torch.where(n > 0, n, torch.ones_like(n))
                vw[j] = vw[j] / n[:, None]
                u = torch.bmm(x, vw[j].unsqueeze(2)).squeeze(2)          # (G, B)
                if has_b[j]:
                    vb[j] = vb[j] / n
                    u = u + vb[j][:, None]
                ow = torch.bmm(u.unsqueeze(1), x).squeeze(1)               # (G, d_in)
                outs.append([ow] + ([u.sum(dim=1)] if has_b[j] else []))
            flat = self.reduce_fn([t for o in outs for t in o])
            it = iter(flat)
            outs = [[next(it) for _ in o] for o in outs]
            for j, o in enumerate(outs):
                lam = (vw[j] * o[0]).sum(dim=1)
                if has_b[j]:
                    lam = lam + vb[j] * o[1]
                lams[j] = lam
                vw[j] = o[0]
                vb[j] = o[1] if has_b[j] else None
        out = [0.0] * len(self.layers)
        for j, layers in enumerate(groups):
            values = lams[j].tolist()
            for i, layer in enumerate(layers):
                self._wvec[layer.index] = [vw[j][i]] + ([vb[j][i]] if has_b[j] else [])
                out[layer.index] = pens[layer.index].lipschitz_z(layer.activation) * max(values[i], 0.0) / count
        return out
