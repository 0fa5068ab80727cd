"""Plain multilayer perceptrons (``nn.Sequential``) that the lifted engine can lift."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..lifted.activations import ProximalActivation, make_activation


def mlp(widths: Sequence[int], activation: str | ProximalActivation = "relu",
        output_activation: nn.Module | None = None, bias: bool = True) -> nn.Sequential:
    """``Linear(w0, w1), σ, …, Linear(w_{L−1}, w_L)`` (+ ``output_activation`` if given).

    ``widths = (64, 256, 256, 10)`` is the digits network. The hidden activation is a
    :class:`ProximalActivation` (by name, see ``lifted.ACTIVATIONS``) so the model is liftable.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise ValueError(f"widths: need at least two positive sizes, got {widths}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(make_activation(activation) if isinstance(activation, str) else activation)
    if output_activation is not None:
        layers.append(output_activation)
    return nn.Sequential(*layers)
