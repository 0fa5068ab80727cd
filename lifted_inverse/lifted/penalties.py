"""Lifting penalties ``P(y, z) ≥ 0`` with ``P = 0 ⇔ y = σ(z)`` (method §1), one interface.

``y`` is a layer's state (its output), ``z`` its pre-activation ``W x + b``; tensors ``(B, ...)``.
Every penalty splits, as a function of ``y``, into a smooth part with gradient ``grad_y_smooth``
(Lipschitz constant ``lipschitz_y``) and a proximable part with ``prox_y(v, t)``; as a function
of ``z`` it is smooth with gradient ``grad_z`` (Lipschitz constant ``lipschitz_z``). That is all
the block-coordinate solvers need.

* :class:`BregmanPenalty` ``s·B_Ψ(y, z) = s[F(y) + F*(z) − ⟨y, z⟩]``: smooth in ``y`` is
  ``−s⟨y, z⟩``, proximable part ``s F`` with ``prox_{tsF}``; ``∇_z = s(σ(z) − y)``, 1-Lipschitz·s
  (``∇F* = prox_Ψ`` is firmly non-expansive). Convex in ``y`` and in ``z`` separately, so every
  W-block and state block is convex.
* :func:`FenchelPenalty`: Fenchel lifted networks (Gu et al. 2020) use, for ReLU,
  ``½‖y‖² + ½‖max(z, 0)‖² − ⟨y, z⟩`` doubled, i.e. ``2·B_ReLU``; for other activations we use the
  same Fenchel–Young gap, ``2·B_Ψ``. LPOM equals ``B_Ψ`` up to a constant.
* :class:`MACPenalty` ``s·½‖y − σ(z)‖²`` (quadratic-penalty MAC): smooth in ``y`` (gradient
  ``s(y − σ(z))``, Lipschitz ``s``), ``∇_z = s σ'(z)ᵀ(σ(z) − y)`` (a vector–Jacobian product of
  σ alone, never of the network); not convex in ``z``. Its weight follows a
  :class:`HomotopySchedule`.
"""
from __future__ import annotations

import math

import torch

from .activations import ProximalActivation


class Penalty:
    """Base class of lifting penalties; ``scale`` multiplies the whole penalty."""

    name = "penalty"
    #: whether ``P(y, ·)`` composed with an affine map is convex (W-blocks convex)
    convex_in_z = True

    def __init__(self, scale: float = 1.0):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: penalty scale must be a positive finite number, got {scale!r}")
        self.scale = float(scale)

    def value(self, act: ProximalActivation, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``P(y, z)`` per sample, shape ``(B,)``."""
        raise NotImplementedError

    def grad_z(self, act: ProximalActivation, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``∇_z P(y, z)``, shape of ``z``."""
        raise NotImplementedError

    def value_and_grad_z(self, act: ProximalActivation, y: torch.Tensor, z: torch.Tensor):
        """``(P(y, z) per sample, ∇_z P(y, z))`` together (W-blocks need both)."""
        return self.value(act, y, z), self.grad_z(act, y, z)

    def lipschitz_z(self, act: ProximalActivation) -> float:
        """Lipschitz constant of ``z ↦ ∇_z P(y, z)``."""
        return self.scale

    def grad_y_smooth(self, act, y, z) -> torch.Tensor:
        """Gradient in ``y`` of the smooth part of ``P(·, z)``."""
        raise NotImplementedError

    def lipschitz_y(self, act) -> float:
        """Lipschitz constant of ``grad_y_smooth`` in ``y``."""
        return 0.0

    def prox_y(self, act, v: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``prox`` of ``t·`` (non-smooth part of ``P(·, z)``) at ``v``."""
        return v

    def __repr__(self):
        return f"{type(self).__name__}(scale={self.scale:g})"


class BregmanPenalty(Penalty):
    """Lifted Bregman penalty ``s·B_Ψ(y, z)`` (see module docstring)."""

    name = "bregman"

    def value(self, act, y, z):
        return self.scale * act.bregman(y, z)

    def grad_z(self, act, y, z):
        s = act(z)     # σ(z) is a new tensor except for the identity, which returns z itself
        r = z - y if s is z else s.sub_(y)
        return r if self.scale == 1.0 else r.mul_(self.scale)

    def value_and_grad_z(self, act, y, z):
        value, r = act.bregman_with_residual(y, z)      # one σ(z), shared passes
        return (value, r) if self.scale == 1.0 else (self.scale * value, self.scale * r)

    def grad_y_smooth(self, act, y, z):
        return -self.scale * z

    def prox_y(self, act, v, t):
        return act.prox_F(v, t * self.scale)


def FenchelPenalty(scale: float = 1.0) -> BregmanPenalty:
    """Fenchel lifted penalty ``2·scale·B_Ψ`` (for ReLU exactly Gu et al.'s penalty)."""
    p = BregmanPenalty(2.0 * scale)
    p.name = "fenchel"
    return p


class MACPenalty(Penalty):
    """Quadratic-penalty MAC ``s·½‖y − σ(z)‖²`` (see module docstring)."""

    name = "mac"
    convex_in_z = False

    def value(self, act, y, z):
        d = (y - act(z)).reshape(y.shape[0], -1)
        return 0.5 * self.scale * (d * d).sum(dim=1)

    def grad_z(self, act, y, z):
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            s = act(zz)
            (g,) = torch.autograd.grad(s, zz, grad_outputs=(s.detach() - y))
        return self.scale * g

    def lipschitz_z(self, act):
        # σ' ≤ 1 for every proximal activation (prox is non-expansive); exact for piecewise-linear σ
        # away from the kinks, a heuristic step size elsewhere (the block is not convex).
        return self.scale

    def grad_y_smooth(self, act, y, z):
        return self.scale * (y - act(z))

    def lipschitz_y(self, act):
        return self.scale


PENALTIES = {"bregman": BregmanPenalty, "fenchel": FenchelPenalty, "mac": MACPenalty}


def make_penalty(name: str, scale: float = 1.0) -> Penalty:
    """Build a penalty by name: ``'bregman'``, ``'fenchel'`` or ``'mac'``."""
    try:
        return PENALTIES[name](scale)
    except KeyError:
        raise ValueError(f"method: unknown penalty {name!r}; expected one of {sorted(PENALTIES)}") from None


class HomotopySchedule:
    """Penalty weight ``μ_k = min(μ_max, μ_0 · growth^k)`` at epoch ``k`` (MAC homotopy)."""

    def __init__(self, mu0: float = 1.0, growth: float = 1.1, mu_max: float = 100.0):
        if not mu0 > 0 or not growth >= 1 or not mu_max >= mu0:
            raise ValueError(
                f"homotopy: need mu0 > 0, growth >= 1, mu_max >= mu0; got {mu0}, {growth}, {mu_max}")
        self.mu0, self.growth, self.mu_max = float(mu0), float(growth), float(mu_max)

    def __call__(self, epoch: int) -> float:
        return min(self.mu_max, self.mu0 * self.growth ** max(int(epoch), 0))

    def __repr__(self):
        return f"HomotopySchedule(mu0={self.mu0:g}, growth={self.growth:g}, mu_max={self.mu_max:g})"
