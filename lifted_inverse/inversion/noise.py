"""Noisy network outputs at a prescribed Bregman noise level δ.

Definition (the single-layer theorem's assumption): data ``f^δ`` has noise level ``δ`` if

    B_Ψ(f^δ, z†) = δ²,     z† = W u† + b  (pre-activation of the output layer, N(u†) = σ(z†)),

with ``Ψ`` the output activation's potential (identity output: ``½‖f^δ − N(u†)‖² = δ²``). Since
``B_Ψ(y, z) ≥ ½‖y − σ(z)‖²``, this implies ``‖f^δ − N(u†)‖ ≤ √2 δ``.

Generation: draw a seeded Gaussian direction ``η`` and set ``f^δ = P(σ(z†) + sη)`` with ``P`` the
projection onto ``dom Ψ`` (ReLU: ``max(·, 0)``) and the scalar ``s ≥ 0`` found per sample by bisection
so that ``B_Ψ(f^δ, z†) = δ²`` (to relative accuracy 1e-10). ``s ↦ B_Ψ(P(σ(z†) + sη), z†)`` is
continuous with value 0 at ``s = 0``.

A *relative* level ``ε`` (e.g. 0.05 = 5 %) means ``δ = ε ‖N(u†)‖ / √2`` per sample: for an identity
output this is exactly ``‖f^δ − N(u†)‖ = ε ‖N(u†)‖``.
"""
from __future__ import annotations

import math

import torch

from ..lifted.activations import ProximalActivation


def relative_delta(clean_output: torch.Tensor, level: float) -> torch.Tensor:
    """``δ = ε‖N(u†)‖/√2`` per sample, shape ``(B,)``, for a relative noise level ``ε = level``."""
    if not level >= 0:
        raise ValueError(f"level: expected a non-negative relative noise level, got {level}")
    return level * torch.linalg.vector_norm(clean_output.flatten(1), dim=1) / math.sqrt(2.0)


@torch.no_grad()
def bregman_noise(
    activation: ProximalActivation,
    z_true: torch.Tensor,
    delta: float | torch.Tensor,
    seed: int = 0,
    direction: torch.Tensor | None = None,
) -> torch.Tensor:
    """``f^δ`` with ``B_Ψ(f^δ, z†) = δ²`` per sample (module docstring); shape of ``z_true``.

    ``delta``: scalar or ``(B,)``; ``direction``: the perturbation ``η`` (default seeded N(0, I)).
    """
    batch = z_true.shape[0]
    delta = torch.as_tensor(delta, dtype=z_true.dtype, device=z_true.device).reshape(-1)
    if delta.numel() == 1:
        delta = delta.expand(batch)
    if delta.numel() != batch or bool((delta < 0).any()):
        raise ValueError(f"delta: expected a non-negative scalar or one value per sample ({batch})")
    if direction is None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        direction = torch.randn(z_true.shape, generator=gen, dtype=z_true.dtype).to(z_true.device)
    elif direction.shape != z_true.shape:
        raise ValueError(f"direction: expected shape {tuple(z_true.shape)}, got {tuple(direction.shape)}")
    clean = activation(z_true)
    target = delta * delta
    view = (batch,) + (1,) * (z_true.ndim - 1)

    def level(s: torch.Tensor) -> torch.Tensor:
        return activation.bregman(activation.project(clean + s.reshape(view) * direction), z_true)

    scale = clean.flatten(1).abs().amax(1).clamp_min(1.0) / direction.flatten(1).abs().amax(1).clamp_min(1e-30)
    lo = torch.zeros_like(delta)
    hi = 1e-3 * scale
    for _ in range(200):
        below = level(hi) < target
        if not bool(below.any()):
            break
        hi = torch.where(below, 2.0 * hi, hi)
    else:
        raise ValueError(f"delta: noise level {delta.tolist()} is out of reach for {activation!r}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = level(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        if bool(((hi - lo) <= 1e-10 * hi.clamp_min(1e-300)).all()):
            break
    s = torch.where(target > 0, 0.5 * (lo + hi), torch.zeros_like(lo))
    return activation.project(clean + s.reshape(view) * direction)
