"""The layer-wise view of a feed-forward network that the inversion solvers work on.

A network ``N = S_L ∘ … ∘ S_1`` is described as a chain of stages, each one of

* :class:`AffineStage`   ``x ↦ σ(A x + b)``                 (Linear / Conv2d, reshapes, activation)
* :class:`ResidualStage` ``x ↦ x + V σ(A x + b) + c``       (a :class:`ResidualBlock`)

where ``A``, ``V`` are :class:`~lifted_inverse.operators.LinearOperator` s with exact adjoints
(``Aᵀ`` is a transposed linear map / transposed convolution, never a backward pass through N) and
``σ = prox_Ψ`` is a :class:`~lifted_inverse.lifted.ProximalActivation`. Biases are stored as full
tensors ``b = A_affine(0)`` of shape ``(1, *out_shape)``.

:func:`describe` is a thin adapter over :func:`~lifted_inverse.lifted.model.lift`, the package's
one description of a model as lifted layers: it wraps each lifted block's
:class:`~lifted_inverse.lifted.model.LinearMap` (forward, exact adjoint, bias) as an operator
between stage shapes. Residual blocks are :class:`~lifted_inverse.lifted.layers.ResidualBlock` s;
:func:`Residual` builds one from ``nn.Sequential(linear, activation, linear)`` (older API).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..lifted.activations import Identity as IdentityActivation
from ..lifted.activations import ProximalActivation
from ..lifted.layers import ResidualBlock
from ..lifted.model import AffineLayer, LinearMap, lift
from ..operators.base import LinearOperator

Shape = tuple[int, ...]


def Residual(body: nn.Sequential) -> ResidualBlock:  # keeps the former class name
    """``x ↦ x + V σ(W x + b) + c`` from ``body = nn.Sequential(W, σ, V)`` (``W``, ``V``:
    ``nn.Linear`` / ``nn.Conv2d``): the :class:`ResidualBlock` ``(W, σ, V)``, sharing the modules."""
    if not isinstance(body, nn.Sequential) or len(body) != 3:
        got = f"{len(body)} modules" if isinstance(body, nn.Sequential) else type(body).__name__
        raise TypeError(f"body: expected nn.Sequential(linear, activation, linear), got {got}")
    try:
        return ResidualBlock(body[0], body[1], body[2])
    except TypeError as err:
        raise TypeError(f"body: expected nn.Sequential(linear, activation, linear): {err}") from None


class StageOperator(LinearOperator):
    """``A = P_out ∘ W ∘ P_in``: a lifted linear map ``W`` between stage shapes.

    ``P_in`` reshapes ``(B, *in_shape)`` to the map's input ``(B, *W.in_shape)`` and ``P_out`` its
    output to ``(B, *out_shape)``; ``Aᵀ = P_inᵀ Wᵀ P_outᵀ`` with ``Wᵀ`` the exact adjoint of
    :class:`~lifted_inverse.lifted.model.LinearMap` (transposed weight / transposed convolution).
    ``linear_map=None`` gives the pure reshape ``A = P``.
    """

    def __init__(self, linear_map: LinearMap | None, in_shape: Shape, out_shape: Shape):
        super().__init__(in_shape, out_shape)
        self.map = linear_map
        # registered so that .to(device), norm()'s dtype/device probe and state follow the model
        self.layers = nn.ModuleList([] if linear_map is None else [linear_map.module])

    def _forward(self, x):
        if self.map is not None:
            x = self.map.forward(x.reshape(x.shape[0], *self.map.in_shape))
        return x.reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y):
        if self.map is not None:
            y = self.map.adjoint(y.reshape(y.shape[0], *self.map.out_shape))
        return y.reshape(y.shape[0], *self.in_shape)


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


def _full_bias(linear_map: LinearMap, out_shape: Shape) -> torch.Tensor:
    """The map's bias ``b`` as a full tensor of shape ``(1, *out_shape)`` (zeros when it has none)."""
    w = linear_map.weight
    with torch.no_grad():
        full = torch.zeros((1, *linear_map.out_shape), dtype=w.dtype, device=w.device)
        b = linear_map.bias()
        if b is not None:
            full = full + b
    return full.reshape(1, *out_shape).detach()


def _affine_stage(layer: AffineLayer, in_shape: Shape, out_shape: Shape) -> AffineStage:
    return AffineStage(StageOperator(layer.map, in_shape, out_shape),
                       _full_bias(layer.map, out_shape), layer.activation)


def describe(model: nn.Module, input_shape: Sequence[int]) -> list[Stage]:
    """Chain of stages of ``model`` for inputs of shape ``(B, *input_shape)``, read off ``lift``.

    Each lifted ``AffineLayer`` becomes an :class:`AffineStage` (identity activation between two
    linear modules in a row and after a final linear one) and each residual block a
    :class:`ResidualStage`. Stage boundaries: a stage ends at the shape its activation acts on, a
    Flatten/Unflatten after an activation belongs to the next stage's ``A``, trailing reshapes to
    the last stage's ``A``, and a reshape right before a residual block is a stage of its own
    (``A = P``, ``b = 0``, identity σ). ``lift`` raises ``TypeError`` for modules without a lifted
    form (an activation with no proximal map such as GELU, pooling, normalisation) and
    ``ValueError`` for shape mismatches, naming the module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape: expected positive sizes, got {tuple(input_shape)}")
    net = lift(model, shape)
    stages: list[Stage] = []
    for i, block in enumerate(net.blocks):
        last = i == len(net.blocks) - 1
        if isinstance(block, AffineLayer):
            out = block.out_shape if last else block.activation_shape
            stages.append(_affine_stage(block, shape, out))
            shape = out
            continue
        block_shape = block.W.in_shape
        if shape != block_shape:
            ref = block.W.weight
            stages.append(AffineStage(StageOperator(None, shape, block_shape),
                                      torch.zeros((1, *block_shape), dtype=ref.dtype, device=ref.device),
                                      IdentityActivation()))
        if last and block.skip.out_shape != block_shape:
            raise ValueError("model: a reshape after the last residual block cannot be inverted as "
                             "a stage; reshape the network output instead")
        inner = _affine_stage(block.inner, block_shape, block.W.out_shape)
        stages.append(ResidualStage(inner.op, inner.bias, inner.activation,
                                    StageOperator(block.V, block.V.in_shape, block_shape),
                                    _full_bias(block.V, block_shape)))
        shape = block_shape
    return stages


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
