"""Regularisers ``J`` for inversion and the one-step updates that handle them.

Every solver in this package minimises ``g(u) + α J(u) [+ ι_{[lo, hi]}(u)]`` with a smooth ``g``
(gradient ``∇g``, Lipschitz constant ``L``) one step at a time:

* ``½‖u‖²`` and ``ℓ1``: forward–backward ``u⁺ = prox_{ταJ + ι}(u − τ∇g(u))`` (FISTA-accelerated by
  the caller); both proxes are separable, so the box is applied by clipping after the prox.
* isotropic TV ``J(u) = Σ_{c,i,j} ‖(∇u)_{c,:,i,j}‖₂``: forward–backward with the TV prox by a
  warm-started fast dual projected gradient (default, FISTA-accelerated), or one Condat–Vũ
  primal–dual step (method §5, ``TotalVariation(method='pdhg')``)
      u⁺ = clip(u − τ(∇g(u) + α∇ᵀp)),   p⁺ = proj_{‖p_{c,:,i,j}‖₂ ≤ 1}(p + τ_p α∇(2u⁺ − u)),
  which converges for ``1/τ − τ_p α²‖∇‖² ≥ L/2`` with ``‖∇‖² ≤ 8``; we take
  ``τ = 1/(L/2 + β)``, ``τ_p = 0.99 β/(8α²)`` with ``β = balance · L/2`` (``balance = 1``: τ = 1/L).

Shapes: ``u`` is ``(B, *shape)``; TV needs ``shape = (C, H, W)``. ``value`` returns ``(B,)``.
Values, proxes and the TV dual projection are those of the shared functionals
(:mod:`lifted_inverse.reconstruction.functionals`); this module adds the solver steps.
"""
from __future__ import annotations

import torch

from ..operators.gradient import Gradient
from ..reconstruction import functionals as F

Bounds = tuple[float | None, float | None] | None


def clip(u: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """Projection onto the box ``[lo, hi]`` (either side may be ``None``)."""
    if bounds is None:
        return u
    return F.IndicatorBox(*bounds).prox(u)


class Regularizer:
    """Base class: ``J``, its subgradient and one proximal / primal–dual step.

    ``functional`` is ``J`` as a :class:`~lifted_inverse.reconstruction.functionals.Functional`;
    ``value`` is its value and the default ``step`` the forward–backward step with its prox."""

    name = "none"
    functional: F.Functional
    #: whether ``step`` is a plain forward–backward step (so FISTA extrapolation applies)
    forward_backward = True

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if ``J`` is not defined for inputs of shape ``(B, *shape)``."""

    def value(self, u: torch.Tensor) -> torch.Tensor:
        """``J(u)``, shape ``(B,)``."""
        return self.functional(u)

    def init_state(self, u: torch.Tensor) -> dict:
        return {}

    def step(self, u, grad, tau, lipschitz, alpha, state, bounds: Bounds = None):
        """One update of ``u`` given ``grad = ∇g(u)``, step ``tau ≤ 1/L``: here
        ``clip(prox_{ταJ}(u − τ∇g(u)))`` (the box commutes with separable proxes)."""
        return clip(self.functional.prox(u - tau * grad, tau * alpha), bounds)

    def subgradient(self, u, state, grad, alpha) -> torch.Tensor:  # pragma: no cover - abstract
        """An element of ``∂J(u)`` consistent with the optimality condition at the solution."""
        raise NotImplementedError

    def bregman_distance(self, u_ref, u, state, grad, alpha) -> torch.Tensor:
        """``D_J(u_ref, u) = J(u_ref) − J(u) − ⟨p, u_ref − u⟩``, ``p ∈ ∂J(u)``; shape ``(B,)``."""
        p = self.subgradient(u, state, grad, alpha)
        inner = ((u_ref - u) * p).flatten(1).sum(1)
        return (self.value(u_ref) - self.value(u) - inner).clamp_min(0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Tikhonov(Regularizer):
    """``J(u) = ½‖u‖²``; ``prox_{tJ}(v) = v / (1 + t)``; ``∂J(u) = {u}``."""

    name = "l2"

    functional = F.SquaredL2()

    def subgradient(self, u, state, grad, alpha):
        return u


class L1(Regularizer):
    """``J(u) = ‖u‖₁``; ``prox_{tJ}`` = soft-thresholding at ``t``."""

    name = "l1"

    functional = F.L1()

    def subgradient(self, u, state, grad, alpha):
        if alpha <= 0:
            return torch.sign(u)
        return torch.where(u != 0, torch.sign(u), (-grad / alpha).clamp(-1.0, 1.0))


class TotalVariation(Regularizer):
    """Isotropic TV ``J(u) = Σ_{c,i,j} ‖(∇u)_{c,:,i,j}‖₂`` (forward differences, Neumann).

    ``method='fista'`` (default): forward–backward steps ``u⁺ = prox_{ταTV + ι_box}(u − τ∇g)``
    (FISTA-accelerated by the caller) with the prox computed by ``prox_iterations`` steps of the
    fast dual projected gradient of Beck & Teboulle (2009), warm-started from the previous dual:
        x = clip(v − λ∇ᵀq),   p⁺ = proj_{‖·‖₂ ≤ 1}(q + ∇x / (8λ)),   q = p⁺ + (t−1)/t⁺ (p⁺ − p).
    ``method='pdhg'``: one Condat–Vũ step per call (module docstring). In both cases the dual ``p``
    of shape ``(B, C, 2, H, W)`` in ``state`` gives the subgradient ``∇ᵀp ∈ ∂J(u)``.
    """

    name = "tv"

    def __init__(self, method: str = "fista", prox_iterations: int = 5, balance: float = 1.0):
        if method not in ("fista", "pdhg"):
            raise ValueError(f"method: expected 'fista' or 'pdhg', got {method!r}")
        if not isinstance(prox_iterations, int) or prox_iterations < 1:
            raise ValueError(f"prox_iterations: expected a positive integer, got {prox_iterations!r}")
        if not balance > 0:
            raise ValueError(f"balance: expected a positive primal/dual balance, got {balance}")
        self.method = method
        self.forward_backward = method == "fista"
        self.prox_iterations = prox_iterations
        self.balance = float(balance)
        self.functional = F.TotalVariation(iterations=prox_iterations)

    def __repr__(self) -> str:
        return f"TotalVariation(method={self.method!r})"

    def _grad_op(self, shape) -> Gradient:
        return self.functional.gradient(shape)

    def check(self, shape):
        if len(shape) != 3:
            raise ValueError(
                f"regularizer: TV needs image-shaped inputs (B, C, H, W); the network input has shape "
                f"(B, {', '.join(map(str, shape))}) - use 'l2' or 'l1', or add nn.Flatten to the model"
            )

    def init_state(self, u):
        self.check(tuple(u.shape[1:]))
        c, h, w = u.shape[1:]
        return {"p": torch.zeros((u.shape[0], c, 2, h, w), dtype=u.dtype, device=u.device)}

    def prox(self, v: torch.Tensor, lam: float, state: dict, bounds: Bounds = None) -> torch.Tensor:
        """``argmin_x ½‖x − v‖² + λ TV(x) + ι_box(x)`` by warm-started fast dual projected gradient
        (:meth:`~lifted_inverse.reconstruction.functionals.TotalVariation.prox_dual`)."""
        if lam <= 0:
            return clip(v, bounds)
        box = F.IndicatorBox(*bounds) if bounds is not None else None
        x, state["p"] = self.functional.prox_dual(v, lam, state["p"], box, self.prox_iterations)
        return x

    def step(self, u, grad, tau, lipschitz, alpha, state, bounds=None):
        if alpha <= 0:
            return clip(u - tau * grad, bounds)
        if self.method == "fista":
            return self.prox(u - tau * grad, tau * alpha, state, bounds)
        D = self._grad_op(u.shape[1:])
        p = state["p"]
        # the primal step shrinks to τ = 1/(L/2 + β), β = balance·L/2, leaving room β for the dual
        beta = 0.5 * self.balance * lipschitz
        tau = min(tau, 1.0 / (0.5 * lipschitz + beta))
        tau_p = 0.99 * beta / (F.GRADIENT_NORM_SQ * alpha * alpha)
        u_new = clip(u - tau * (grad + alpha * D.adjoint(p)), bounds)
        state["p"] = self.functional.dual.prox(p + (tau_p * alpha) * D(2.0 * u_new - u))
        return u_new

    def subgradient(self, u, state, grad, alpha):
        return self._grad_op(u.shape[1:]).adjoint(state["p"])

    def bregman_distance(self, u_ref, u, state, grad, alpha):
        """``D_J(u†, u) = Σ (‖∇u†‖ − ⟨p, ∇u†⟩) − (TV(u) − ⟨p, ∇u⟩)`` with the dual ``p`` (‖p‖ ≤ 1)."""
        D = self._grad_op(u.shape[1:])
        p = state["p"]
        inner = ((D(u_ref) - D(u)) * p).flatten(1).sum(1)
        return (self.value(u_ref) - self.value(u) - inner).clamp_min(0.0)


REGULARIZERS = {"tv": TotalVariation, "l2": Tikhonov, "l1": L1}


def make_regularizer(spec: str | Regularizer) -> Regularizer:
    """``'tv'``, ``'l2'`` (½‖·‖²), ``'l1'`` or a :class:`Regularizer` instance."""
    if isinstance(spec, Regularizer):
        return spec
    try:
        return REGULARIZERS[str(spec).lower()]()
    except KeyError:
        raise ValueError(f"regularizer: expected one of {sorted(REGULARIZERS)}, got {spec!r}") from None
