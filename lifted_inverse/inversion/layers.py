"""The layer-wise view of a feed-forward network that the inversion solvers work on.

A network ``N = S_L ∘ … ∘ S_1`` is described as a chain of stages, each one of

* :class:`AffineStage`   ``x ↦ σ(A x + b)``                 (Linear / Conv2d, reshapes, activation)
* :class:`ResidualStage` ``x ↦ x + V σ(A x + b) + c``       (a :class:`Residual` block)

where ``A``, ``V`` are :class:`~lifted_inverse.operators.LinearOperator` s with exact adjoints
(``Aᵀ`` is a transposed linear map / transposed convolution, never a backward pass through N) and
``σ = prox_Ψ`` is a :class:`~lifted_inverse.lifted.ProximalActivation`. Biases are stored as full
tensors ``b = A_affine(0)`` of shape ``(1, *out_shape)``.

:func:`describe` builds the chain from an ``nn.Sequential`` made of ``nn.Linear``, ``nn.Conv2d``,
``nn.Flatten``, ``nn.Unflatten``, activations with a proximal form and :class:`Residual` blocks.
(The lifted engine's ``lift`` is the long-term home of this description; this module only needs
the forward/adjoint maps, biases and activations, so it does not depend on it.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from ..lifted.activations import Identity as IdentityActivation
from ..lifted.activations import ProximalActivation, as_proximal
from ..operators.base import LinearOperator

Shape = tuple[int, ...]


class Residual(nn.Module):
    """Residual block ``x ↦ x + body(x)`` with ``body = Sequential(linear, activation, linear)``.

    The two linear maps are ``nn.Linear`` or ``nn.Conv2d`` (with optional reshapes); the output
    shape of ``body`` must equal its input shape.
    """

    def __init__(self, body: nn.Sequential):
        super().__init__()
        if not isinstance(body, nn.Sequential):
            raise TypeError(f"body: expected an nn.Sequential, got {type(body).__name__}")
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


_LINEAR_TYPES = (nn.Linear, nn.Conv2d)
_RESHAPE_TYPES = (nn.Flatten, nn.Unflatten)


class _Reshape:
    """A reshape ``(B, *in_shape) -> (B, *out_shape)`` (Flatten / Unflatten), adjoint = inverse."""

    def __init__(self, in_shape: Shape, out_shape: Shape):
        self.in_shape, self.out_shape = in_shape, out_shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y):
        return y.reshape(y.shape[0], *self.in_shape)


class _LinearPart:
    """The bias-free part of an ``nn.Linear`` / ``nn.Conv2d`` with its exact adjoint."""

    def __init__(self, module: nn.Module, in_shape: Shape):
        self.module = module
        self.in_shape = in_shape
        with torch.no_grad():
            probe = torch.zeros((1, *in_shape), dtype=module.weight.dtype, device=module.weight.device)
            self.out_shape = tuple(self.forward(probe).shape[1:])

    def forward(self, x):
        m = self.module
        if isinstance(m, nn.Linear):
            return nnf.linear(x, m.weight)
        return nnf.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)

    def adjoint(self, y):
        m = self.module
        if isinstance(m, nn.Linear):
            return nnf.linear(y, m.weight.t())
        # conv_transpose2d is the adjoint of conv2d once the output size is pinned to the input
        h, w = self.in_shape[-2:]
        sh, sw = m.stride
        ph, pw = m.padding
        dh, dw = m.dilation
        kh, kw = m.kernel_size
        oh = h - ((y.shape[-2] - 1) * sh - 2 * ph + dh * (kh - 1) + 1)
        ow = w - ((y.shape[-1] - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
        return nnf.conv_transpose2d(y, m.weight, None, m.stride, m.padding, (oh, ow), m.groups, m.dilation)


class ModuleOperator(LinearOperator):
    """The linear part ``A`` of a chain of reshapes and one ``nn.Linear`` / ``nn.Conv2d``.

    ``A x = P_out(L(P_in x))`` with bias dropped; ``Aᵀ y = P_inᵀ Lᵀ P_outᵀ y`` using the transposed
    weight (Linear) or ``conv_transpose2d`` (Conv2d). Shapes ``(B, *in_shape) -> (B, *out_shape)``.
    """

    def __init__(self, parts: Sequence, in_shape: Shape, out_shape: Shape, modules: Sequence[nn.Module]):
        super().__init__(in_shape, out_shape)
        self._parts = list(parts)
        # registered so that .to(device), norm()'s dtype/device probe and state follow the model
        self.layers = nn.ModuleList([m for m in modules])

    def _forward(self, x):
        for part in self._parts:
            x = part.forward(x)
        return x

    def _adjoint(self, y):
        for part in reversed(self._parts):
            y = part.adjoint(y)
        return y


@dataclass
class AffineStage:
    """``x ↦ σ(A x + b)``; ``bias`` has shape ``(1, *A.out_shape)``."""

    op: LinearOperator
    bias: torch.Tensor
    activation: ProximalActivation

    @property
    def in_shape(self) -> Shape:
        return self.op.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.op.out_shape

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``A x + b``, shape ``(B, *out_shape)``."""
        return self.op(x) + self.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activation(x))


@dataclass
class ResidualStage:
    """``x ↦ x + V σ(A x + b) + c``; ``A: in → hidden``, ``V: hidden → in``."""

    op: LinearOperator
    bias: torch.Tensor
    activation: ProximalActivation
    out_op: LinearOperator
    out_bias: torch.Tensor

    @property
    def in_shape(self) -> Shape:
        return self.op.in_shape

    @property
    def out_shape(self) -> Shape:
        return self.op.in_shape

    @property
    def hidden_shape(self) -> Shape:
        return self.op.out_shape

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + self.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_op(self.activation(self.pre_activation(x))) + self.out_bias


Stage = AffineStage | ResidualStage


def _flatten_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out = []
        for m in model:
            out.extend(_flatten_modules(m))
        return out
    return [model]


def _reshape_out(module: nn.Module, shape: Shape) -> Shape:
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *shape))).shape[1:])


def _affine(modules: list[nn.Module], in_shape: Shape, where: str) -> tuple[LinearOperator, torch.Tensor]:
    """Linear part and full bias of a chain of reshapes and at most one Linear/Conv2d."""
    parts, shape, linear = [], in_shape, None
    for m in modules:
        if isinstance(m, _RESHAPE_TYPES):
            out = _reshape_out(m, shape)
            parts.append(_Reshape(shape, out))
            shape = out
        elif isinstance(m, _LINEAR_TYPES):
            if linear is not None:  # pragma: no cover - describe() never groups two linears
                raise ValueError(f"{where}: two linear layers without an activation in between")
            _check_input(m, shape, where)
            part = _LinearPart(m, shape)
            parts.append(part)
            shape, linear = part.out_shape, m
        else:  # pragma: no cover - filtered by describe()
            raise TypeError(f"{where}: unsupported module {m!r}")
    op = ModuleOperator(parts, in_shape, shape, [m for m in modules if isinstance(m, _LINEAR_TYPES)])
    ref = linear.weight if linear is not None else torch.zeros(())
    with torch.no_grad():
        x0 = torch.zeros((1, *in_shape), dtype=ref.dtype, device=ref.device)
        full = x0
        for m in modules:
            full = m(full)  # the affine map at 0 = the bias, already in the output layout
    return op, full.detach()


def _check_input(m: nn.Module, shape: Shape, where: str) -> None:
    if isinstance(m, nn.Linear):
        if len(shape) != 1 or shape[0] != m.in_features:
            raise ValueError(
                f"{where}: {m!r} expects inputs of shape (B, {m.in_features}), but receives "
                f"(B, {', '.join(map(str, shape))}); add nn.Flatten or fix input_shape"
            )
    elif isinstance(m, nn.Conv2d):
        if len(shape) != 3 or shape[0] != m.in_channels:
            raise ValueError(
                f"{where}: {m!r} expects inputs of shape (B, {m.in_channels}, H, W), but receives "
                f"(B, {', '.join(map(str, shape))})"
            )
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise TypeError(f"{where}: {m!r}: only numeric zero padding is supported")


def describe(model: nn.Module, input_shape: Sequence[int]) -> list[Stage]:
    """Chain of stages of ``model`` for inputs of shape ``(B, *input_shape)``.

    Groups ``[reshapes] linear [reshapes] [activation]`` into an :class:`AffineStage` (identity
    activation when none follows, identity ``A`` for a bare activation) and turns each
    :class:`Residual` into a :class:`ResidualStage`. Raises ``TypeError`` for modules without a
    lifted form (e.g. an activation with no proximal map such as GELU, pooling, normalisation) and
    ``ValueError`` for shape mismatches, naming the layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape: expected positive sizes, got {tuple(input_shape)}")
    modules = _flatten_modules(model)
    stages: list[Stage] = []
    pending: list[nn.Module] = []
    has_linear = False

    def close(activation_module: nn.Module | None, index: int) -> None:
        nonlocal pending, has_linear, shape
        where = f"layer {index} ({type(activation_module or pending[-1]).__name__})"
        act = as_proximal(activation_module) if activation_module is not None else IdentityActivation()
        op, bias = _affine(pending, shape, where)
        stages.append(AffineStage(op, bias, act))
        shape = op.out_shape
        pending, has_linear = [], False

    for i, m in enumerate(modules):
        where = f"layer {i} ({type(m).__name__})"
        if isinstance(m, _RESHAPE_TYPES):
            pending.append(m)
        elif isinstance(m, _LINEAR_TYPES):
            if has_linear:
                close(None, i)
            pending.append(m)
            has_linear = True
        elif isinstance(m, Residual):
            if pending:
                close(None, i)
            stages.append(_residual(m, shape, where))
        else:
            try:
                act = as_proximal(m)
            except TypeError as err:
                kind = "activation" if not list(m.parameters()) else "module"
                raise TypeError(f"{where}: cannot lift this {kind}: {err}") from None
            close(act, i)
    if pending:
        if not has_linear:
            # trailing reshape: fold it into the last stage's operator
            if not stages or not isinstance(stages[-1], AffineStage):
                raise ValueError("model: a trailing reshape must follow an affine layer")
            last = stages.pop()
            parts, out = [], last.out_shape
            for m in pending:
                new = _reshape_out(m, out)
                parts.append(_Reshape(out, new))
                out = new
            op = ModuleOperator([last.op, *parts], last.in_shape, out, [last.op])
            bias = last.bias.reshape(1, *out)
            stages.append(AffineStage(op, bias, last.activation))
        else:
            close(None, len(modules))
    if not stages:
        raise ValueError("model: no layers to invert")
    return stages


def _residual(block: Residual, shape: Shape, where: str) -> ResidualStage:
    inner = describe(block.body, shape)
    ok = (len(inner) == 2 and isinstance(inner[0], AffineStage) and isinstance(inner[1], AffineStage)
          and isinstance(inner[1].activation, IdentityActivation))
    if not ok:
        raise TypeError(f"{where}: a Residual body must be Sequential(linear, activation, linear)")
    if inner[1].out_shape != shape:
        raise ValueError(f"{where}: body maps {shape} to {inner[1].out_shape}; shapes must agree")
    return ResidualStage(inner[0].op, inner[0].bias, inner[0].activation, inner[1].op, inner[1].bias)


def forward_states(stages: Sequence[Stage], u: torch.Tensor) -> torch.Tensor:
    """``N(u)`` evaluated stage by stage (equals ``model(u)``)."""
    x = u
    for s in stages:
        x = s(x)
    return x


def output_activation(stage: Stage) -> ProximalActivation:
    """The activation whose Bregman penalty ties the network output to the data."""
    return stage.activation if isinstance(stage, AffineStage) else IdentityActivation()


def output_pre_activation(stage: Stage, x: torch.Tensor) -> torch.Tensor:
    """The ``z`` with ``N(u) = σ_out(z)``: ``A x + b`` (affine), the output itself (residual)."""
    return stage.pre_activation(x) if isinstance(stage, AffineStage) else stage(x)


def squared_norm(op: LinearOperator, like: torch.Tensor) -> float:
    """``‖A‖²`` by the operator's seeded, cached power iteration (float64 for accuracy)."""
    value = op.norm(device=like.device, dtype=like.dtype)
    if not math.isfinite(value):
        raise ValueError("operator norm is not finite")
    return value * value
