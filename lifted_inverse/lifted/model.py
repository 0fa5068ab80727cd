"""The lifted view of an ordinary torch model (method §1, §4).

``lift(model, input_shape=None, output_activation=None) -> LiftedNetwork`` describes a plain
``nn.Sequential`` (``nn.Linear`` / ``nn.Conv2d`` / ``nn.Flatten`` / ``nn.Unflatten``, proximal
activations, :class:`~lifted_inverse.lifted.layers.ResidualBlock` s) as a graph of *lifted layers*
acting on *states*. The weights stay in the user's model (the lifted layers hold references to its
``nn.Linear`` / ``nn.Conv2d`` modules), so prediction is the model's ordinary forward pass.

States. ``x^0`` (index 0) is the input, the last state (index ``num_states − 1``) is the network
output, which training fixes to the target (``x^L := y``). Every other state is a free variable
stored per sample with shape ``(B, *state_shapes[s])``.

Lifted layers (the protocol every solver uses; new layer types plug in by implementing it):

* ``inputs`` (tuple of state indices), ``output`` (state index), ``activation`` (σ = prox_Ψ);
* ``pre_activation(xs) -> z``: ``z = Σ_k A_k xs[k] + b`` for the list ``xs`` of input states;
* ``input_adjoint(k, r) -> A_kᵀ r`` and ``input_lipschitz(k) -> ‖A_k‖²`` (cached, seeded power
  iteration, refreshed only when the weights changed);
* ``parameters() -> list[Tensor]`` and ``weight_grad(xs, r) -> list[Tensor]``: ``(∂z/∂θ)ᵀ r``
  summed over the batch, one tensor per parameter;
* ``weight_gram_apply(xs, v) -> DᵀD v`` for ``D: θ ↦ z`` restricted to one output channel
  (the Gram that bounds the W-block Lipschitz constant; sums over the batch so it can be
  all-reduced), with ``weight_probe()`` the starting vector; ``None`` for layers that are not
  affine in θ (solvers then backtrack);
* optional ``input_adjoint_through(k, r) -> (M, t)`` with ``A_kᵀ r = Mᵀ t`` for a linear map ``M``
  (an object with ``adjoint``) that several layers apply to the same input, or ``(None, A_kᵀ r)``:
  a state block sums the ``t`` of one ``M`` and applies ``Mᵀ`` once (an unrolled network's data
  step ``I − γA*A`` is read by two layers, and each ``A*A`` may be costly).

Concrete layers: :class:`AffineLayer` ``z = W x + b`` (Linear or Conv2d; ``linear``,
``linear_adjoint`` (transposed conv for conv layers), ``bias`` (shape ``(1, *out_shape)`` or
None), ``activation_shape`` (the shape σ is applied at; differs from ``out_shape`` when a
Flatten/Unflatten follows the activation), ``pre_activation``, ``lipschitz() = ‖W‖²``, ``weight_norm() = ‖W‖``, ``in_shape``,
``out_shape``); :class:`SkipLayer` ``z = u + V h + c`` (the second half of a residual block,
identity activation). A residual block ``u_j = u_{j−1} + V σ(W u_{j−1} + b) + c`` becomes an
``AffineLayer`` ``u_{j−1} → h_j`` and a ``SkipLayer`` ``(u_{j−1}, h_j) → u_j``; the coupling
penalty on the skip layer is ``ρ/2‖u_j − u_{j−1} − V h_j − c‖²`` (ρ its penalty weight).
``LiftedNetwork.blocks`` lists the model-level blocks in order: ``AffineLayer`` or
:class:`ResidualView` (``W``, ``V``: the two layers' linear maps with adjoints).

Errors: a module with no lifted form, an activation with no Ψ (e.g. ``nn.GELU``), or shapes that
do not fit raise ``TypeError`` / ``ValueError`` naming the module index and the problem.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from ..linalg import power_iteration
from .activations import Identity, ProximalActivation, Softmax, as_proximal
from .layers import ResidualBlock

Shape = tuple[int, ...]
_RESHAPES = (nn.Flatten, nn.Unflatten)
_ACTIVATION_TYPES = (ProximalActivation, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Softshrink,
                     nn.LeakyReLU, nn.Softmax, nn.Identity, nn.GELU, nn.ELU, nn.SiLU, nn.Softplus,
                     nn.Mish, nn.SELU, nn.CELU, nn.PReLU, nn.LogSoftmax, nn.Hardswish, nn.Hardsigmoid)


class LinearMap:
    """The bias-free linear part ``A`` of an ``nn.Linear`` / ``nn.Conv2d``, with reshapes.

    ``forward: (B, *in_shape) -> (B, *out_shape)``; ``adjoint`` is exact (transposed matmul or
    ``conv_transpose2d`` with the output size pinned). ``in_shape`` is the state shape feeding it.
    """

    def __init__(self, module: nn.Module, in_shape: Shape, where: str):
        self.module = module
        self.in_shape = tuple(in_shape)
        self.where = where
        w = module.weight
        if isinstance(module, nn.Linear):
            if self.in_shape != (module.in_features,):
                raise ValueError(
                    f"{where} ({module}): expects per-sample input of shape ({module.in_features},), "
                    f"the previous layer gives {self.in_shape}"
                    + ("; add nn.Flatten() before it" if len(self.in_shape) > 1 else ""))
            self.module_out_shape: Shape = (module.out_features,)
        elif isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise ValueError(f"{where} ({module}): only padding_mode='zeros' can be lifted, "
                                 f"got {module.padding_mode!r}")
            if len(self.in_shape) != 3 or self.in_shape[0] != module.in_channels:
                raise ValueError(f"{where} ({module}): expects per-sample input (C={module.in_channels}, "
                                 f"H, W), the previous layer gives {self.in_shape}")
            if isinstance(module.padding, str):
                raise ValueError(f"{where} ({module}): give padding as integers, not {module.padding!r}")
            with torch.no_grad():
                probe = torch.zeros((1, *self.in_shape), device="meta", dtype=w.dtype)
                out = nnf.conv2d(probe, w.to("meta"), None, module.stride, module.padding,
                                 module.dilation, module.groups)
            self.module_out_shape = tuple(out.shape[1:])
        else:  # pragma: no cover - guarded by lift
            raise TypeError(f"{where}: expected nn.Linear or nn.Conv2d, got {type(module).__name__}")
        self.out_shape: Shape = self.module_out_shape
        self._cache_key = None
        self._norm_sq = 0.0
        gen = torch.Generator().manual_seed(1234)
        self._vec = torch.randn(self.in_shape, generator=gen, dtype=torch.float64)

    def set_out_shape(self, shape: Shape) -> None:
        self.out_shape = tuple(shape)

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.is_conv:
            y = nnf.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)
        else:
            y = x @ m.weight.t()
        return y if self.out_shape == self.module_out_shape else y.reshape(y.shape[0], *self.out_shape)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.out_shape != self.module_out_shape:
            r = r.reshape(r.shape[0], *self.module_out_shape)
        if self.is_conv:
            return torch.nn.grad.conv2d_input((r.shape[0], *self.in_shape), m.weight, r, m.stride,
                                              m.padding, m.dilation, m.groups)
        return r @ m.weight

    def bias(self) -> torch.Tensor | None:
        """The bias as a tensor broadcastable to ``(B, *out_shape)``, or None."""
        b = self.module.bias
        if b is None:
            return None
        if self.is_conv:
            b = b.view(1, -1, 1, 1)
            return b if self.out_shape == self.module_out_shape else \
                b.expand(1, *self.module_out_shape).reshape(1, *self.out_shape)
        return b.view(1, *self.out_shape) if self.out_shape != self.module_out_shape else b.view(1, -1)

    def parameters(self) -> list[torch.Tensor]:
        return [self.module.weight] + ([self.module.bias] if self.module.bias is not None else [])

    def weight_grad(self, x: torch.Tensor, r: torch.Tensor) -> list[torch.Tensor]:
        """``(∂(A x + b)/∂θ)ᵀ r`` summed over the batch: ``[Σ r xᵀ, Σ r]`` (closed forms)."""
        m = self.module
        if self.out_shape != self.module_out_shape:
            r = r.reshape(r.shape[0], *self.module_out_shape)
        if self.is_conv:
            gw = torch.nn.grad.conv2d_weight(x, m.weight.shape, r, m.stride, m.padding, m.dilation,
                                             m.groups)
            grads = [gw]
            if m.bias is not None:
                grads.append(r.sum(dim=(0, 2, 3)))
        else:
            grads = [r.t() @ x]
            if m.bias is not None:
                grads.append(r.sum(dim=0))
        return grads

    # ---- W-block Gram (one output channel): D v = x·v_w + v_b, Dᵀ u = (xᵀu, Σu) ---------------
    def weight_probe(self) -> list[torch.Tensor]:
        m = self.module
        w = m.weight
        shape = (1, *w.shape[1:]) if self.is_conv else (w.shape[1],)
        if self.is_conv and m.groups != 1:
            shape = (1, *w.shape[1:])
        v = [torch.ones(shape, dtype=w.dtype, device=w.device)]
        if m.bias is not None:
            v.append(torch.ones((), dtype=w.dtype, device=w.device))
        return v

    def weight_gram_apply(self, x: torch.Tensor, v: list[torch.Tensor]) -> list[torch.Tensor]:
        m = self.module
        if self.is_conv:
            cin = m.in_channels // m.groups
            xg = x[:, :cin] if m.groups != 1 else x
            u = nnf.conv2d(xg, v[0], None, m.stride, m.padding, m.dilation, 1)
            if len(v) > 1:
                u = u + v[1]
            out = [torch.nn.grad.conv2d_weight(xg, v[0].shape, u, m.stride, m.padding, m.dilation, 1)]
        else:
            u = x @ v[0]
            if len(v) > 1:
                u = u + v[1]
            out = [u @ x]
        if len(v) > 1:
            out.append(u.sum())
        return out

    # ---- operator norm ------------------------------------------------------------------------
    def norm_sq(self, iterations: int = 500, refresh_iterations: int = 1) -> float:
        """``‖A‖²`` by seeded power iteration; cached until the weight tensor changes.

        The first call runs ``iterations`` steps; after a weight update ``refresh_iterations``
        steps warm-started from the previous singular vector track the (slowly moving) norm.
        """
        w = self.module.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if key != self._cache_key:
            first = self._cache_key is None or self._vec.dtype != w.dtype or self._vec.device != w.device
            v = self._vec.to(dtype=w.dtype, device=w.device)
            with torch.no_grad():
                lam, v = power_iteration(lambda t: self.adjoint(self.forward(t[None]))[0], v,
                                         iterations if first else refresh_iterations)
            self._vec, self._norm_sq, self._cache_key = v, lam, key
        return self._norm_sq


class LiftedLayer:
    """Protocol of a lifted layer (see the module docstring). Subclasses implement it.

    ``coupling``: the layer's penalty is a coupling term weighted by the objective's ρ (residual
    skips, the x-layers of unrolled networks) rather than a hidden-layer penalty weighted by λ.
    """

    index: int
    inputs: tuple[int, ...]
    output: int
    activation: ProximalActivation
    out_shape: Shape
    name: str = "layer"
    coupling: bool = False

    def pre_activation(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def input_adjoint(self, k: int, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_lipschitz(self, k: int) -> float:
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def weight_grad(self, xs: Sequence[torch.Tensor], r: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def weight_probe(self) -> list[torch.Tensor] | None:
        return None

    def weight_gram_apply(self, xs, v):
        return None

    def __repr__(self):
        return f"{type(self).__name__}(#{self.index} {self.name}: states {self.inputs} -> {self.output})"


class AffineLayer(LiftedLayer):
    """``z = W x + b``, ``x^{out} ≈ σ(z)``; ``W`` an ``nn.Linear`` or ``nn.Conv2d`` of the model."""

    def __init__(self, index: int, linear_map: LinearMap, activation: ProximalActivation,
                 input_state: int, output_state: int):
        self.index = index
        self.map = linear_map
        self.activation = activation
        self.inputs = (input_state,)
        self.output = output_state
        self.name = type(linear_map.module).__name__
        # σ acts on this shape; a reshape that follows the activation changes out_shape only
        self.activation_shape: Shape = linear_map.out_shape

    @property
    def module(self) -> nn.Module:
        return self.map.module

    @property
    def in_shape(self) -> Shape:
        return self.map.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.map.out_shape

    @property
    def weight(self) -> torch.Tensor:
        return self.map.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """Bias broadcastable to ``(B, *out_shape)`` or None."""
        return self.map.bias()

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` (no bias), ``(B, *in_shape) -> (B, *out_shape)``."""
        return self.map.forward(x)

    def linear_adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``Wᵀ r``, ``(B, *out_shape) -> (B, *in_shape)`` (transposed convolution for Conv2d)."""
        return self.map.adjoint(r)

    def pre_activation(self, xs) -> torch.Tensor:
        x = xs if isinstance(xs, torch.Tensor) else xs[0]
        z = self.map.forward(x)
        b = self.map.bias()
        return z if b is None else z + b

    def input_adjoint(self, k, r):
        return self.map.adjoint(r)

    def lipschitz(self) -> float:
        """``‖W‖²`` (the Lipschitz constant of ``x ↦ Wᵀ(W x)``), cached power iteration."""
        return self.map.norm_sq()

    def weight_norm(self) -> float:
        """``‖W‖`` (spectral norm / operator norm of the convolution)."""
        return self.map.norm_sq() ** 0.5

    def input_lipschitz(self, k):
        return self.map.norm_sq()

    def parameters(self):
        return self.map.parameters()

    def weight_grad(self, xs, r):
        x = xs if isinstance(xs, torch.Tensor) else xs[0]
        return self.map.weight_grad(x, r)

    def weight_probe(self):
        return self.map.weight_probe()

    def weight_gram_apply(self, xs, v):
        x = xs if isinstance(xs, torch.Tensor) else xs[0]
        return self.map.weight_gram_apply(x, v)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activation(x))


class SkipLayer(LiftedLayer):
    """``z = P(u + V h + c)`` with identity activation: the output half of a residual block.

    ``inputs = (u, h)``; ``P`` an optional reshape of the block output (a following Flatten);
    ``input_adjoint(0, r) = Pᵀ r``, ``input_adjoint(1, r) = Vᵀ Pᵀ r``.
    """

    def __init__(self, index: int, outer: LinearMap, input_state: int, hidden_state: int,
                 output_state: int):
        self.index = index
        self.map = outer
        self.activation = Identity()
        self.inputs = (input_state, hidden_state)
        self.output = output_state
        self.name = f"skip+{type(outer.module).__name__}"
        self.coupling = True
        self.block_shape = outer.out_shape
        self.out_shape: Shape = outer.out_shape

    def set_out_shape(self, shape: Shape) -> None:
        self.out_shape = tuple(shape)

    def _unshape(self, r):
        return r if self.out_shape == self.block_shape else r.reshape(r.shape[0], *self.block_shape)

    def pre_activation(self, xs):
        z = xs[0] + self.map.forward(xs[1])
        b = self.map.bias()
        z = z if b is None else z + b
        return z if self.out_shape == self.block_shape else z.reshape(z.shape[0], *self.out_shape)

    def input_adjoint(self, k, r):
        r = self._unshape(r)
        return r if k == 0 else self.map.adjoint(r)

    def input_lipschitz(self, k):
        return 1.0 if k == 0 else self.map.norm_sq()

    def parameters(self):
        return self.map.parameters()

    def weight_grad(self, xs, r):
        return self.map.weight_grad(xs[1], self._unshape(r))

    def weight_probe(self):
        return self.map.weight_probe()

    def weight_gram_apply(self, xs, v):
        return self.map.weight_gram_apply(xs[1], v)


@dataclass
class ResidualView:
    """Model-level view of a residual block: ``u ↦ u + V σ(W u + b) + c``."""

    inner: AffineLayer
    skip: SkipLayer

    @property
    def W(self) -> LinearMap:
        return self.inner.map

    @property
    def V(self) -> LinearMap:
        return self.skip.map

    @property
    def activation(self) -> ProximalActivation:
        return self.inner.activation

    def __call__(self, u):
        h = self.inner(u)
        z = u + self.V.forward(h)
        b = self.V.bias()
        return z if b is None else z + b


class WeightHook:
    """Quantities a model derives from its weights (e.g. step sizes ``τ_k = c/‖L_k‖²``) that the
    solvers must keep in step with every weight update. ``LiftedNetwork.weight_hook`` is None for
    models without such quantities.

    * ``refresh(params, iterations)``: re-derive them after ``params`` changed in place
      (``iterations``: warm-started power iterations a norm estimate may use);
    * ``snapshot(params) -> object`` / ``restore(snapshot)``: save and put back what ``refresh``
      changes, so a rejected trial step (backtracking) leaves the model as it was.
    """

    def refresh(self, params: Sequence[torch.Tensor], iterations: int) -> None:
        raise NotImplementedError

    def snapshot(self, params: Sequence[torch.Tensor]) -> object:
        raise NotImplementedError

    def restore(self, snapshot: object) -> None:
        raise NotImplementedError


class LiftedNetwork:
    """The lifted description of a model: layers, state shapes, and the state graph.

    Attributes: ``model`` (the user's module, owner of the weights), ``layers`` (list of
    :class:`LiftedLayer`), ``blocks`` (model-level view), ``input_shape`` (per-sample input shape
    the model takes), ``state_shapes`` (per-sample shape of each state; state 0 is the input
    reshaped by leading Flatten/Unflatten), ``producer[s]`` (layer writing state s),
    ``consumers[s]`` (``(layer, k)`` pairs reading state s as input k), ``free_states``,
    ``colors`` (groups of free states no two of which share a layer: updated in parallel).

    Fixed inputs: the first ``n_inputs`` states are data, never free. By default state 0 is the
    model input itself; a model whose layers read quantities derived from the input (an unrolled
    network reads the measurement ``y`` and an initial estimate ``x_0(y)``) gives
    ``input_map: (B, *input_shape) -> list of n_inputs tensors``. ``weight_hook``: a
    :class:`WeightHook` or None.
    """

    def __init__(self, model: nn.Module, layers: list[LiftedLayer], blocks: list, input_shape: Shape,
                 state_shapes: list[Shape], n_inputs: int = 1, input_map=None,
                 weight_hook: WeightHook | None = None):
        self.model = model
        self.layers = layers
        self.blocks = blocks
        self.input_shape = tuple(input_shape)
        self.state_shapes = [tuple(s) for s in state_shapes]
        n = len(state_shapes)
        if not 1 <= n_inputs < n:
            raise ValueError(f"n_inputs: expected 1 <= n_inputs < {n} (the number of states), got {n_inputs}")
        if n_inputs > 1 and input_map is None:
            raise ValueError("input_map: needed to derive more than one fixed input state")
        self.n_inputs = int(n_inputs)
        self.input_map = input_map
        self.weight_hook = weight_hook
        self._inputs_of: tuple | None = None    # (raw input, its fixed states): see prepare_inputs
        self.producer: list[LiftedLayer | None] = [None] * n
        self.consumers: list[list[tuple[LiftedLayer, int]]] = [[] for _ in range(n)]
        for layer in layers:
            self.producer[layer.output] = layer
            for k, s in enumerate(layer.inputs):
                self.consumers[s].append((layer, k))
        self.free_states = list(range(self.n_inputs, n - 1))
        self.colors = self._color()

    @property
    def num_states(self) -> int:
        return len(self.state_shapes)

    @property
    def output_layer(self) -> LiftedLayer:
        return self.producer[-1]

    def _color(self) -> list[list[int]]:
        """Greedy colouring of the free states: two states sharing a layer get different colours.

        For a chain (MLP/CNN) this is odd/even; a residual chain needs three groups.
        """
        neighbours = {s: set() for s in self.free_states}
        for layer in self.layers:
            members = [s for s in (*layer.inputs, layer.output) if s in neighbours]
            for a in members:
                neighbours[a].update(b for b in members if b != a)
        color: dict[int, int] = {}
        for s in self.free_states:
            used = {color[t] for t in neighbours[s] if t in color}
            color[s] = next(c for c in range(len(self.free_states) + 1) if c not in used)
        groups = [[s for s in self.free_states if color[s] == c] for c in sorted(set(color.values()))]
        return groups

    def parameters(self) -> list[torch.Tensor]:
        """All lifted weights, layer by layer (``layer.parameters()`` concatenated)."""
        return [p for layer in self.layers for p in layer.parameters()]

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate a batch ``(B, *input_shape)`` (finite, right shape) and reshape it to state 0."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or inf")
        return x.reshape(x.shape[0], *self.state_shapes[0])

    @torch.no_grad()
    def prepare_inputs(self, x: torch.Tensor, name: str = "x") -> list[torch.Tensor]:
        """The fixed input states ``[x^0, …, x^{n_inputs−1}]`` of a batch (validated). With an
        ``input_map`` the result for the last batch is kept (a full-batch solver passes the same
        tensor every step, and the map may be costly, e.g. a filtered backprojection), until ``x``
        is written in place."""
        if self.input_map is None:
            return [self.check_input(x, name)]
        kept = self._inputs_of
        if kept is not None and kept[0] is x and kept[1] == x._version:
            return list(kept[2])
        fixed = list(self.input_map(self.check_input(x, name)))
        if len(fixed) != self.n_inputs:
            raise ValueError(f"input_map: expected {self.n_inputs} input states, got {len(fixed)}")
        self._inputs_of = (x, x._version, fixed)
        return list(fixed)

    def forward_states(self, x: torch.Tensor, pre_activations: dict | None = None) -> list[torch.Tensor]:
        """All states of the plain forward pass, ``[x^0, …, x^L]`` (``x^L = σ_L(z_L)``); the
        pre-activations ``z_l`` go into ``pre_activations[l]`` when a dict is given."""
        states: list[torch.Tensor | None] = [None] * self.num_states
        states[:self.n_inputs] = self.prepare_inputs(x)
        with torch.no_grad():
            for layer in self.layers:
                z = layer.pre_activation([states[s] for s in layer.inputs])
                if pre_activations is not None:
                    pre_activations[layer.index] = z
                states[layer.output] = layer.activation(z)
        return states

    def output_pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``z_L`` of the plain forward pass (logits for a softmax output)."""
        states = self.forward_states(x)
        last = self.output_layer
        with torch.no_grad():
            return last.pre_activation([states[s] for s in last.inputs])

    def __repr__(self):
        body = "\n  ".join(repr(layer) for layer in self.layers)
        return f"LiftedNetwork(states {self.state_shapes},\n  {body})"


def _flat_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            out.extend(_flat_modules(m) if isinstance(m, nn.Sequential) else [m])
        return out
    return [model]


def _reshaped(module: nn.Module, shape: Shape, where: str) -> Shape:
    if isinstance(module, nn.Flatten) and module.start_dim == 0:
        raise ValueError(f"{where} ({module}): Flatten must keep the batch dimension (start_dim >= 1)")
    try:
        return tuple(module(torch.empty((1, *shape), device="meta")).shape[1:])
    except RuntimeError as err:
        raise ValueError(f"{where} ({module}): cannot reshape per-sample shape {shape}: {err}") from None


def _is_residual_like(m: nn.Module) -> bool:
    body = getattr(m, "body", None)
    return (isinstance(body, nn.Sequential) and len(body) == 3
            and isinstance(body[0], (nn.Linear, nn.Conv2d)) and isinstance(body[2], (nn.Linear, nn.Conv2d)))


def lift(model: nn.Module, input_shape: Sequence[int] | None = None,
         output_activation: nn.Module | None = None, operator=None) -> LiftedNetwork:
    """Build the :class:`LiftedNetwork` of ``model``.

    A model with its own lifted form (the PNN, unrolled proximal networks) implements
    ``model.lifted_network(input_shape=..., operator=...) -> LiftedNetwork`` and is lifted by it;
    ``operator`` is the fixed forward operator such a model applies inside its layers (a linear map:
    callable with ``.adjoint``), None for models without one.

    Args:
        model: an ``nn.Sequential`` (nested allowed) of ``nn.Linear``, ``nn.Conv2d``, ``nn.Flatten``,
            ``nn.Unflatten``, proximal activations (or their torch equivalents) and
            :class:`ResidualBlock` s (or modules with a ``body = Sequential(linear, σ, linear)``
            computing ``x + body(x)``); a single ``nn.Linear`` / ``nn.Conv2d`` also works.
        input_shape: per-sample input shape; inferred when the model starts with ``nn.Linear``.
        output_activation: σ of the last layer when the model ends in a linear module (its output
            is then a pre-activation, e.g. logits): ``nn.Softmax(dim=1)`` / :class:`Softmax` for
            classification, identity (default) for regression.

    Consecutive linear modules get an identity activation in between. Flatten/Unflatten reshape
    the preceding state (elementwise activations commute with reshapes).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    hook = getattr(model, "lifted_network", None)
    if callable(hook):
        if output_activation is not None:
            raise ValueError(f"output_activation: {type(model).__name__} defines its own lifted layers")
        return hook(input_shape=input_shape, operator=operator)
    if operator is not None:
        raise TypeError(f"operator: {type(model).__name__} has no layers that apply a forward operator "
                        "(it defines no lifted_network hook)")
    modules = _flat_modules(model)
    first_linear = next((m for m in modules if isinstance(m, (nn.Linear, nn.Conv2d, ResidualBlock))
                         or _is_residual_like(m)), None)
    if first_linear is None:
        raise ValueError("model: contains no nn.Linear, nn.Conv2d or residual block to lift")
    if input_shape is None:
        if isinstance(modules[0], nn.Linear):
            input_shape = (modules[0].in_features,)
        else:
            raise ValueError(f"input_shape: needed for a model starting with {type(modules[0]).__name__}"
                             " (e.g. (1, 28, 28))")
    input_shape = tuple(int(s) for s in input_shape)
    if any(s <= 0 for s in input_shape):
        raise ValueError(f"input_shape: sizes must be positive, got {input_shape}")

    state_shapes: list[Shape] = [input_shape]
    layers: list[LiftedLayer] = []
    blocks: list = []
    pending: LinearMap | None = None       # linear map waiting for its activation
    pending_where = ""
    last_owner: LinearMap | None = None    # map whose output is the newest state (for reshapes)
    last_is_skip = False

    def close(act: ProximalActivation):
        nonlocal pending, last_owner, last_is_skip
        layer = AffineLayer(len(layers), pending, act, len(state_shapes) - 1, len(state_shapes))
        if isinstance(act, Softmax) and len(pending.out_shape) != 1:
            raise ValueError(f"{pending_where}: a softmax activation needs flat (B, n) pre-activations, "
                             f"got per-sample shape {pending.out_shape}; add nn.Flatten() before it")
        layers.append(layer)
        blocks.append(layer)
        state_shapes.append(pending.out_shape)
        last_owner, last_is_skip, pending = pending, False, None

    for i, m in enumerate(modules):
        where = f"module {i}"
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if pending is not None:
                close(Identity())
            pending, pending_where = LinearMap(m, state_shapes[-1], where), where
        elif isinstance(m, _RESHAPES):
            if pending is not None:
                pending.set_out_shape(_reshaped(m, pending.out_shape, where))
            elif last_is_skip:
                layers[-1].set_out_shape(_reshaped(m, layers[-1].out_shape, where))
                state_shapes[-1] = layers[-1].out_shape
            elif last_owner is not None:
                last_owner.set_out_shape(_reshaped(m, last_owner.out_shape, where))
                state_shapes[-1] = last_owner.out_shape
            else:
                state_shapes[0] = _reshaped(m, state_shapes[0], where)
        elif isinstance(m, ResidualBlock) or _is_residual_like(m):
            if pending is not None:
                close(Identity())
            inner, act, outer = (m.inner, m.activation, m.outer) if isinstance(m, ResidualBlock) \
                else tuple(m.body)
            try:
                act = as_proximal(act)
            except TypeError as err:
                raise TypeError(f"{where} (residual block): {err}") from None
            u = len(state_shapes) - 1
            wmap = LinearMap(inner, state_shapes[u], f"{where} (residual inner)")
            hidden = AffineLayer(len(layers), wmap, act, u, u + 1)
            layers.append(hidden)
            state_shapes.append(wmap.out_shape)
            vmap = LinearMap(outer, wmap.out_shape, f"{where} (residual outer)")
            if vmap.out_shape != state_shapes[u]:
                raise ValueError(f"{where} (residual block): the outer map gives per-sample shape "
                                 f"{vmap.out_shape}, the block input has {state_shapes[u]}")
            skip = SkipLayer(len(layers), vmap, u, u + 1, u + 2)
            layers.append(skip)
            state_shapes.append(vmap.out_shape)
            blocks.append(ResidualView(hidden, skip))
            last_owner, last_is_skip = vmap, True
        elif isinstance(m, _ACTIVATION_TYPES) or type(m).__module__.startswith("torch.nn.modules.activation"):
            try:
                act = as_proximal(m)
            except TypeError as err:
                raise TypeError(f"{where}: {err}") from None
            if pending is None:
                if isinstance(act, Identity):
                    continue
                raise ValueError(f"{where} ({m}): an activation must follow a linear layer "
                                 "(two activations in a row, or one at the start, cannot be lifted)")
            close(act)
        else:
            raise TypeError(f"{where} ({type(m).__name__}): cannot be lifted; supported are nn.Linear, "
                            "nn.Conv2d, nn.Flatten, nn.Unflatten, proximal activations and residual blocks")
    if pending is not None:
        out_act = Identity() if output_activation is None else output_activation
        try:
            out_act = as_proximal(out_act)
        except TypeError as err:
            raise TypeError(f"output_activation: {err}") from None
        close(out_act)
    elif output_activation is not None:
        raise ValueError("output_activation: the model already ends with an activation")
    return LiftedNetwork(model, layers, blocks, input_shape, state_shapes)
