"""Residual networks built from :class:`~lifted_inverse.lifted.layers.ResidualBlock` (liftable)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..lifted.activations import make_activation
from ..lifted.layers import ResidualBlock


def resnet_mlp(in_features: int, width: int, out_features: int, blocks: int = 8,
               hidden: int | None = None, activation: str = "relu", residual_scale: float | None = None
               ) -> nn.Sequential:
    """``Linear(in, width), σ, ResidualBlock×blocks, Linear(width, out)``.

    Each block is ``u ↦ u + V σ(W u + b)``; ``V`` is initialised scaled by ``residual_scale``
    (default ``1/√blocks``) so the depth does not blow up the forward pass.
    """
    if blocks < 1:
        raise ValueError(f"blocks: need at least one residual block, got {blocks}")
    scale = 1.0 / math.sqrt(blocks) if residual_scale is None else float(residual_scale)
    body = []
    for _ in range(blocks):
        block = ResidualBlock.linear(width, hidden, make_activation(activation))
        with torch.no_grad():
            block.outer.weight.mul_(scale)
        body.append(block)
    return nn.Sequential(nn.Linear(in_features, width), make_activation(activation), *body,
                         nn.Linear(width, out_features))


def resnet_conv(in_channels: int, channels: int, image_size: int, out_features: int, blocks: int = 8,
                activation: str = "relu") -> nn.Sequential:
    """``Conv3×3(in, C), σ, ResidualBlock.conv×blocks, Flatten, Linear(C·H·W, out)``."""
    scale = 1.0 / math.sqrt(blocks)
    body = []
    for _ in range(blocks):
        block = ResidualBlock.conv(channels, activation=make_activation(activation))
        with torch.no_grad():
            block.outer.weight.mul_(scale)
        body.append(block)
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), make_activation(activation),
                         *body, nn.Flatten(), nn.Linear(channels * image_size * image_size, out_features))
