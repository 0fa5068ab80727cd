"""Lifted layers of unrolled proximal algorithms: the PNN and unrolled proximal networks (method §4).

The network (built by the model's ``lifted_network`` hook through :func:`unrolled_network`), layers
``k = 1..K``, ``u_0 = 0``:

    v_k = x_{k−1} − γA*(A x_{k−1} − y)          (data step; PNN: v_k = y)
    p_k = u_{k−1} − τ_k L_k(L_k* u_{k−1} − v_k),  u_k = clip_λ(p_k)     (:class:`DualLayer`)
    q_k = v_k − L_k* u_k,                         x_k = q_k             (:class:`ImageLayer`)

output ``x_K``. Lifted objective (per sample, averaged over the batch), free states ``u_1..u_K``
and, with an operator, ``x_1..x_{K−1}``:

    E = Σ_k B_clip(u_k, p_k) + Σ_{k<K} ρ/2‖x_k − q_k‖² + w/2‖q_K − x†‖²

``B_clip(u, p) = F(u) + F*(p) − ⟨u, p⟩`` with ``F = ½‖·‖² + ι_[−λ,λ]``; the image layers have the
identity activation, whose Bregman penalty is ``½‖x − q‖²`` (weight ρ as coupling layers, ``w`` at
the output). The PNN has no x-states: ``x_k`` does not enter ``v_{k+1} = y``, so its only image
layer is the output.

States: 0 is the measurement ``y`` (read by every layer that needs it; with a ramp-weighted data
term, ``H^{1/2}y``), 1 the initial estimate ``x_0`` when there is an operator, then
``u_1, x_1, u_2, …, u_K`` and the target ``x_K := x†`` last (PNN: ``y, u_1..u_K, x†``). The data
step is not a state: it is a fixed affine map of ``(x_{k−1}, y)`` inside the layers that read it
(:class:`DataStep`), so the objective has no penalty on it.

Operators. ``ops`` is the user's module holding the ``L_k`` (duck-typed, e.g.
:class:`~lifted_inverse.networks.pnn.ProximalLayers`): ``weight(k)`` (the parameter, used in place,
never copied), ``index(k)`` (its weight index), ``L(k, x)``, ``Lt(k, u)``,
``dual_step(k, u, r) = u − τ_k r``, ``weight_gradient(k, x, g) = ∂⟨g, L_k x⟩/∂L_k`` (batch sum),
``step(k)`` (τ_k, a 0-d tensor), ``norms`` (``‖L_i‖`` by weight index), ``lam``, and for
:class:`StepSizes` ``estimate_norm_sq(i, iterations=...)``, ``set_norm(i, norm_sq, probe)`` and
the buffers ``tau``, ``norms``, ``probes``. ``A`` is any fixed linear map (callable with
``.adjoint``); this module applies it and nothing else.

Lipschitz bounds (state blocks): ``‖M_k‖ ≤ 1`` for ``M_k = I − τ_k L_k L_k*`` because
``τ_k‖L_k‖² < 2``; ``‖I − γA*A‖ ≤ 1`` because ``γ‖A‖² ≤ 2``; ``‖L_k‖`` is a warm-started
power-iteration estimate from below, so it enters with the margin :data:`NORM_MARGIN`.
The layers are not affine in ``L_k`` (``p_k`` is quadratic in it): they have no W-block Gram, and
the solvers take backtracked steps on them (:class:`~lifted_inverse.lifted.solvers.LiftedSolver`).

State blocks are the solver's generic proximal-gradient steps. For ``u_k``:
``u ← prox_{tF}(u − t∇S)``, ``ℓ_u = c_k(NORM_MARGIN‖L_k‖)² + 1`` (``c_k`` = ρ, or ``w`` at the
output; the 1 from ``M_{k+1}``; PNN hidden layers: 1). For ``x_k``: the identity penalty's
``ρ/2‖x_k‖²`` part is taken by its prox, ``x ← (x − t g)/(1 + tρ)`` with ``g`` the gradient of the
rest (``−ρq_k`` plus ``D*(τ_{k+1}L_{k+1}*(σ(p_{k+1}) − u_{k+1}) + c_{k+1}(q_{k+1} − x_{k+1}))``,
``D*`` applied once) and ``ℓ_x = (τ_{k+1}NORM_MARGIN‖L_{k+1}‖)² + c_{k+1}``: exact in the ρ part,
so ``t = state_lr/ℓ_x`` need not shrink with ρ.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .activations import Clip, Identity
from .model import LiftedLayer, LiftedNetwork, WeightHook

#: factor on the power-iterated ``‖L_k‖`` in Lipschitz bounds: a few warm-started iterations
#: estimate the norm from below, and a step above 2/ℓ would no longer be a descent step
NORM_MARGIN = 1.05


class DataStep:
    """``v = D(x, y) = x − γA*(A x − y)``: a gradient step on ``½‖A x − y‖²``.

    ``A``: a fixed linear map (callable, with ``.adjoint``), ``(B, *in) -> (B, *out)``;
    ``gamma``: ``γ`` with ``γ‖A‖² ≤ 2``. The linear part in ``x``, ``I − γA*A``, is self-adjoint
    with norm ≤ 1 (:meth:`adjoint`). The last result is kept until ``x`` or ``y`` is another
    tensor (or one of them is written in place): a sweep reads each ``v_k`` in several blocks,
    and each costs an ``A`` and an ``A*``;
    so the two layers that read ``x_{k−1}`` share one instance per ``k`` (:meth:`for_layer`).
    """

    def __init__(self, A, gamma: float):
        if not callable(A) or not callable(getattr(A, "adjoint", None)):
            raise TypeError(f"A: expected a linear map (callable with .adjoint), got {type(A).__name__}")
        if not gamma > 0:
            raise ValueError(f"gamma: expected a positive step, got {gamma}")
        self.A, self.gamma = A, float(gamma)
        self._last: tuple | None = None

    def for_layer(self) -> DataStep:
        """The same map with a cache of its own (one per image state it reads)."""
        return DataStep(self.A, self.gamma)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        last = self._last
        key = (x._version, y._version)
        if last is not None and last[0] is x and last[1] is y and last[2] == key:
            return last[3]
        v = x - self.gamma * self.A.adjoint(self.A(x) - y)
        self._last = (x, y, key, v)
        return v

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``(I − γA*A) r`` (the adjoint of the linear part in ``x``)."""
        return r - self.gamma * self.A.adjoint(self.A(r))


class _ProximalLayer(LiftedLayer):
    """Shared plumbing: layer ``k`` of ``ops``, input roles ``u`` (dual state), ``x`` (image
    state, through the data step) and ``y`` (measurement), each a state index or None."""

    def __init__(self, index: int, ops, k: int, output: int, u: int | None, x: int | None, y: int,
                 data_step: DataStep | None, out_shape):
        if (x is None) != (data_step is None):
            raise ValueError("x, data_step: an image input needs the data step and vice versa")
        self.index, self.ops, self.k, self.output = index, ops, int(k), output
        self.data_step = data_step
        self.roles = tuple(r for r, s in (("u", u), ("x", x), ("y", y)) if s is not None)
        self.inputs = tuple(s for s in (u, x, y) if s is not None)
        self.out_shape = tuple(out_shape)

    def _get(self, xs: Sequence[torch.Tensor], role: str) -> torch.Tensor | None:
        return xs[self.roles.index(role)] if role in self.roles else None

    def _v(self, xs) -> torch.Tensor:
        """``v_k``: the data step of the image input, or the measurement itself (PNN)."""
        y = self._get(xs, "y")
        return y if self.data_step is None else self.data_step(self._get(xs, "x"), y)

    def _norm(self) -> float:
        return NORM_MARGIN * float(self.ops.norms[self.ops.index(self.k)])

    def parameters(self) -> list[torch.Tensor]:
        return [self.ops.weight(self.k)]


class DualLayer(_ProximalLayer):
    """``u_k = clip_λ(p_k)``, ``p_k = u_{k−1} − τ_k L_k(L_k* u_{k−1} − v_k)`` (one dual
    forward–backward step; ``u_0 = 0`` for the first layer, which has no ``u`` input).

    Adjoints: ``∂p/∂u = M = I − τLL*`` (self-adjoint, ‖M‖ ≤ 1), ``∂p/∂v = τL`` so the image input
    gets ``D*(τL* r)``. W-gradient with ``e = L* u − v``:
    ``(∂p/∂L)ᵀ r = −τ(G(e, r) + G(L* r, u))``, ``G(a, g) = ∂⟨g, L a⟩/∂L`` (first layer:
    ``τ G(v, r)``); ``τ_k`` is held fixed, as in the forward pass. The residual ``e`` of the
    last pre-activation is kept for the W-gradient at the same ``u``, ``v`` and weight (an
    ``L*`` less per layer and sweep).
    """

    name = "dual"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = Clip(self.ops.lam)
        self._e: tuple | None = None

    def _weight_key(self) -> tuple:
        w = self.ops.weight(self.k)
        return w._version, w.data_ptr()

    def _residual(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``e = L* u − v``, reused while ``u``, ``v`` and ``L_k`` are those it was computed for
        (same tensors, not written since)."""
        if torch.is_grad_enabled():       # differentiated: nothing kept, nothing reused
            return self.ops.Lt(self.k, u) - v
        kept = self._e
        key = (u._version, v._version, *self._weight_key())
        if kept is not None and kept[0] is u and kept[1] is v and kept[2] == key:
            return kept[3]
        e = self.ops.Lt(self.k, u).sub_(v)
        self._e = (u, v, key, e)
        return e

    def pre_activation(self, xs) -> torch.Tensor:
        v, u = self._v(xs), self._get(xs, "u")
        if u is None:   # u_{k−1} = 0: p = τ L v
            return self.ops.L(self.k, v).mul_(self.ops.step(self.k).to(v.dtype))
        return self.ops.dual_step(self.k, u, self.ops.L(self.k, self._residual(u, v)))

    def input_adjoint(self, i: int, r: torch.Tensor) -> torch.Tensor:
        ops, k, role = self.ops, self.k, self.roles[i]
        tau = float(ops.step(k))
        if role == "u":
            return torch.sub(r, ops.L(k, ops.Lt(k, r)), alpha=tau)
        if role == "x":
            return self.data_step.adjoint(ops.Lt(k, r).mul_(tau))
        raise ValueError(f"{self!r}: input {i} ({role}) is data, not a free state")

    def input_adjoint_through(self, i: int, r: torch.Tensor):
        """``(D, τL* r)`` for the image input (its adjoint is ``D*(τL* r)``), else ``(None, adjoint)``."""
        if self.roles[i] == "x":
            return self.data_step, self.ops.Lt(self.k, r).mul_(float(self.ops.step(self.k)))
        return None, self.input_adjoint(i, r)

    def input_lipschitz(self, i: int) -> float:
        role = self.roles[i]
        if role == "u":
            return 1.0
        return (float(self.ops.step(self.k)) * self._norm()) ** 2

    def weight_grad(self, xs, r) -> list[torch.Tensor]:
        ops, k = self.ops, self.k
        v, u = self._v(xs), self._get(xs, "u")
        tau = float(ops.step(k))
        if u is None:
            return [ops.weight_gradient(k, v, r).mul_(tau)]
        e = self._residual(u, v)
        g = ops.weight_gradient(k, e, r).add_(ops.weight_gradient(k, ops.Lt(k, r), u))
        return [g.mul_(-tau)]


class ImageLayer(_ProximalLayer):
    """``x_k = q_k = v_k − L_k* u_k`` (identity activation; a coupling layer with penalty
    ``ρ/2‖x_k − q_k‖²``, or the output with ``w/2‖q_K − x†‖²``).

    Adjoints: ``∂q/∂u = −L*`` (so ``−L r``), ``∂q/∂x = D``; W-gradient ``−G(r, u)``.
    """

    name = "image"
    coupling = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = Identity()

    def pre_activation(self, xs) -> torch.Tensor:
        return self._v(xs) - self.ops.Lt(self.k, self._get(xs, "u"))

    def input_adjoint(self, i: int, r: torch.Tensor) -> torch.Tensor:
        role = self.roles[i]
        if role == "u":
            return self.ops.L(self.k, r).neg_()
        if role == "x":
            return self.data_step.adjoint(r)
        raise ValueError(f"{self!r}: input {i} ({role}) is data, not a free state")

    def input_adjoint_through(self, i: int, r: torch.Tensor):
        """``(D, r)`` for the image input (its adjoint is ``D* r``), else ``(None, adjoint)``."""
        if self.roles[i] == "x":
            return self.data_step, r
        return None, self.input_adjoint(i, r)

    def input_lipschitz(self, i: int) -> float:
        return self._norm() ** 2 if self.roles[i] == "u" else 1.0

    def weight_grad(self, xs, r) -> list[torch.Tensor]:
        return [self.ops.weight_gradient(self.k, r, self._get(xs, "u")).neg_()]


class StepSizes(WeightHook):
    """Keeps ``τ_i = step_factor/‖L_i‖²`` of ``ops`` in step with its weights: ``refresh``
    re-estimates ``‖L_i‖`` of the changed weights (warm-started power iteration) and sets ``τ_i``;
    ``snapshot``/``restore`` save and put back ``τ_i``, ``‖L_i‖`` and the power-iteration probe."""

    def __init__(self, ops):
        self.ops = ops

    def _indices(self, params) -> list[int]:
        ids = {id(w): i for i, w in enumerate(self.ops.weights)}
        return sorted({ids[id(p)] for p in params if id(p) in ids})

    @torch.no_grad()
    def refresh(self, params, iterations: int) -> None:
        for i in self._indices(params):
            self.ops.set_norm(i, *self.ops.estimate_norm_sq(i, iterations=iterations))

    def snapshot(self, params):
        ops = self.ops
        return [(i, ops.tau[i].clone(), ops.norms[i].clone(), ops.probes[i].clone())
                for i in self._indices(params)]

    @torch.no_grad()
    def restore(self, snapshot) -> None:
        for i, tau, norm, probe in snapshot:
            self.ops.tau[i] = tau
            self.ops.norms[i] = norm
            self.ops.probes[i].copy_(probe)


def unrolled_network(model: torch.nn.Module, ops, image_shape: Sequence[int], *,
                     data_step: DataStep | None = None, input_shape: Sequence[int] | None = None,
                     input_map: Callable | None = None) -> LiftedNetwork:
    """The :class:`LiftedNetwork` of a PNN (``data_step=None``) or an unrolled proximal network.

    Args:
        model: the user's module (owner of the weights; prediction stays its forward pass).
        ops: its analysis operators ``L_k`` (module docstring), ``ops.n_layers`` layers,
            ``ops.features`` dual channels.
        image_shape: per-sample image shape ``(C, H, W)`` (of ``x_k`` and the target).
        data_step: the data step ``D`` (:class:`DataStep`) of an unrolled network.
        input_shape: per-sample shape of the model input ``y`` (default ``image_shape``).
        input_map: with a data step, ``y -> (y_d, x_0)``: the measurement as the data step reads
            it (e.g. ramp-filtered) and the initial estimate (state 1).
    """
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape: expected (C, H, W), got {image_shape}")
    input_shape = image_shape if input_shape is None else tuple(int(n) for n in input_shape)
    if data_step is not None and input_map is None:
        raise ValueError("input_map: an unrolled network needs y -> (y_d, x_0)")
    u_shape = (int(ops.features), *image_shape[1:])
    K = int(ops.n_layers)
    layers: list[LiftedLayer] = []
    if data_step is None:          # y, u_1..u_K, x†
        shapes = [input_shape] + [u_shape] * K + [image_shape]
        for k in range(K):
            layers.append(DualLayer(len(layers), ops, k, k + 1, k if k > 0 else None, None, 0, None, u_shape))
        layers.append(ImageLayer(len(layers), ops, K - 1, K + 1, K, None, 0, None, image_shape))
        n_inputs = 1
    else:                          # y_d, x_0, u_1, x_1, …, u_K, x†
        shapes = [input_shape, image_shape] + [u_shape, image_shape] * K
        for k in range(K):
            u_prev, x_prev = (2 * k if k > 0 else None), 2 * k + 1
            step = data_step.for_layer()     # v_k, shared by the two layers that read x_{k−1}
            layers.append(DualLayer(len(layers), ops, k, 2 * k + 2, u_prev, x_prev, 0, step, u_shape))
            layers.append(ImageLayer(len(layers), ops, k, 2 * k + 3, 2 * k + 2, x_prev, 0, step, image_shape))
        n_inputs = 2
    return LiftedNetwork(model, layers, layers, input_shape, shapes, n_inputs=n_inputs,
                         input_map=input_map, weight_hook=StepSizes(ops))
