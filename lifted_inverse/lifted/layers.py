"""Torch modules that the lifted engine knows how to lift beyond ``Linear``/``Conv2d`` chains.

:class:`ResidualBlock` is the residual unit ``u_j = u_{j-1} + V_j σ(W_j u_{j-1} + b_j) + c_j``
(method §4) with ``W_j``, ``V_j`` each an ``nn.Linear`` or ``nn.Conv2d`` and ``σ = prox_Ψ``.
It is an ordinary ``nn.Module``: prediction is its plain forward pass.
"""
from __future__ import annotations

from torch import nn

from .activations import ProximalActivation, as_proximal

_LINEAR = (nn.Linear, nn.Conv2d)


class ResidualBlock(nn.Module):
    """``x ↦ x + V(σ(W x + b)) + c`` on tensors ``(B, *shape)``; ``V ∘ W`` must preserve the shape.

    Args:
        inner: ``W`` (``nn.Linear`` or ``nn.Conv2d``, with bias ``b``).
        activation: ``σ``, a :class:`ProximalActivation` or a torch equivalent (``nn.ReLU``...).
        outer: ``V`` (``nn.Linear`` or ``nn.Conv2d``, with optional bias ``c``).
    """

    def __init__(self, inner: nn.Module, activation: nn.Module, outer: nn.Module):
        super().__init__()
        for name, m in (("inner", inner), ("outer", outer)):
            if not isinstance(m, _LINEAR):
                raise TypeError(f"{name}: expected nn.Linear or nn.Conv2d, got {type(m).__name__}")
        self.inner = inner
        self.activation = as_proximal(activation) if not isinstance(activation, ProximalActivation) \
            else activation
        self.outer = outer

    @classmethod
    def linear(cls, width: int, hidden: int | None = None, activation: nn.Module | None = None,
               outer_bias: bool = False) -> ResidualBlock:
        """A fully connected block ``width → hidden → width`` (ReLU by default)."""
        hidden = width if hidden is None else hidden
        act = nn.ReLU() if activation is None else activation
        return cls(nn.Linear(width, hidden), act, nn.Linear(hidden, width, bias=outer_bias))

    @classmethod
    def conv(cls, channels: int, hidden: int | None = None, kernel_size: int = 3,
             activation: nn.Module | None = None, outer_bias: bool = False) -> ResidualBlock:
        """A convolutional block ``C → hidden → C`` with 'same' padding (ReLU by default)."""
        hidden = channels if hidden is None else hidden
        act = nn.ReLU() if activation is None else activation
        pad = kernel_size // 2
        return cls(nn.Conv2d(channels, hidden, kernel_size, padding=pad), act,
                   nn.Conv2d(hidden, channels, kernel_size, padding=pad, bias=outer_bias))

    def forward(self, x):
        return x + self.outer(self.activation(self.inner(x)))
