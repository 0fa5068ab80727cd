"""Convex functionals with value, proximal map and convex conjugate (as ODL's ``Functional``).

Shared by the reconstruction solvers (:mod:`.tv`) and the regularisers of inversion
(:mod:`lifted_inverse.inversion.regularizers`), so that each of TV, ℓ1, ½‖·‖² and the box
indicator is written once. Every functional ``F`` acts per sample on a batch ``x`` of shape
``(B, *shape)``:

* ``F(x)``: shape ``(B,)`` (``inf`` where an indicator is violated);
* ``F.prox(v, step) = argmin_x ½‖x − v‖² + step·F(x)``, ``step`` a float or a ``(B,)`` tensor;
* ``F.convex_conj``: ``F*(y) = sup_x ⟨x, y⟩ − F(x)``, itself a :class:`Functional`; the prox of
  ``F*`` (the dual step of primal–dual methods) is ``F.convex_conj.prox`` or, by Moreau's identity
  ``prox_{σF*}(v) = v − σ prox_{F/σ}(v/σ)``, :meth:`Functional.prox_conj`;
* ``F.smoothed(x, ε)`` (L1, GroupL1, TV: each norm ``‖z‖`` replaced by ``sqrt(‖z‖² + ε²)``;
  ½‖·‖² itself): a differentiable surrogate for gradient methods such as Adam, ``(B,)``.

A ``weight`` ``w`` (a float or a ``(B,)`` tensor, one per sample) multiplies ``F``.

Functionals: :class:`L1` ``w‖x‖₁``, :class:`SquaredL2` ``(w/2)‖x‖²``, :class:`IndicatorBox`
``ι_{[lo, hi]}``, :class:`GroupL1` ``w Σ_g ‖x_g‖₂`` (groups along one axis), its conjugate
:class:`IndicatorGroupBall` ``ι_{‖x_g‖₂ ≤ w}``, and isotropic total variation
:class:`TotalVariation` ``w Σ_{c,i,j} ‖(∇x)_{c,:,i,j}‖₂ = w·GroupL1(∇x)`` (forward differences,
Neumann boundary, :class:`~lifted_inverse.operators.Gradient`), whose prox is computed on the dual
by the fast projected gradient of Beck & Teboulle (2009).
"""
from __future__ import annotations

import math

import torch

from ..operators.gradient import Gradient

Scalar = float | torch.Tensor

__all__ = [
    "GRADIENT_NORM_SQ",
    "L1",
    "Functional",
    "GroupL1",
    "IndicatorBox",
    "IndicatorGroupBall",
    "SquaredL2",
    "TotalVariation",
    "nonnegative",
]

#: ``‖∇‖² ≤ 8`` for 2-D forward differences (the step-size bound of every TV solver)
GRADIENT_NORM_SQ = 8.0
#: indicators count a point as feasible up to this relative excess: a projection followed by
#: arithmetic (Moreau's identity) may overshoot a bound by rounding
_SLACK = 1e-12


def _per_sample(value: Scalar, like: torch.Tensor) -> Scalar:
    """A float as is; a ``(B,)`` tensor reshaped to ``(B, 1, ..., 1)`` to broadcast against ``like``."""
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        return value.reshape(-1, *([1] * (like.ndim - 1)))
    return value


def _sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


class Functional:
    """A proper, convex, lower semicontinuous functional applied per sample (module docstring)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``F(x)``, shape ``(B,)``."""
        raise NotImplementedError

    def prox(self, v: torch.Tensor, step: Scalar = 1.0) -> torch.Tensor:  # pragma: no cover - abstract
        """``argmin_x ½‖x − v‖² + step·F(x)``."""
        raise NotImplementedError

    @property
    def convex_conj(self) -> Functional:  # pragma: no cover - abstract
        """``F*``."""
        raise NotImplementedError(f"{type(self).__name__}: no closed-form convex conjugate")

    def prox_conj(self, v: torch.Tensor, step: Scalar = 1.0) -> torch.Tensor:
        """``prox_{step·F*}(v) = v − step·prox_{F/step}(v/step)`` (Moreau)."""
        s = _per_sample(step, v)
        return v - s * self.prox(v / s, 1.0 / step)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class L1(Functional):
    """``F(x) = w‖x‖₁``; ``prox_{tF}`` soft-thresholds at ``t·w``; ``F* = ι_{[−w, w]}``."""

    def __init__(self, weight: Scalar = 1.0):
        self.weight = weight

    def __call__(self, x):
        return self.weight * _sum(x.abs())

    def smoothed(self, x, eps: float):
        """The smooth surrogate ``w Σ sqrt(x² + ε²)`` (Charbonnier) for gradient methods, ``(B,)``."""
        return self.weight * _sum(torch.sqrt(x * x + eps * eps))

    def prox(self, v, step=1.0):
        t = _per_sample(step, v) * _per_sample(self.weight, v)
        return torch.sign(v) * (v.abs() - t).clamp_min(0.0)

    @property
    def convex_conj(self):
        return IndicatorBox(-self.weight, self.weight)


class SquaredL2(Functional):
    """``F(x) = (w/2)‖x‖²``; ``prox_{tF}(v) = v / (1 + t·w)``; ``F* = (1/(2w))‖·‖²``."""

    def __init__(self, weight: Scalar = 1.0):
        self.weight = weight

    def __call__(self, x):
        return 0.5 * self.weight * _sum(x * x)

    def smoothed(self, x, eps: float):
        """``F`` itself (already smooth; ``eps`` unused), ``(B,)``."""
        return self(x)

    def prox(self, v, step=1.0):
        return v / (1.0 + _per_sample(step, v) * _per_sample(self.weight, v))

    @property
    def convex_conj(self):
        return SquaredL2(1.0 / self.weight)


class IndicatorBox(Functional):
    """``F = ι_{[lo, hi]}`` entrywise (``None``: unbounded on that side; a ``(B,)`` tensor: one bound
    per sample; feasible up to a relative ``1e-12``, see ``_SLACK``); ``prox_{tF}`` is the projection (clamp) for every ``t``.
    ``F*(y) = Σ max(lo·y, hi·y)``; for ``lo = −hi`` that is ``hi‖y‖₁``, the conjugate given here."""

    def __init__(self, lo: Scalar | None = None, hi: Scalar | None = None):
        self.lo, self.hi = lo, hi

    def __call__(self, x):
        inside = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        if self.lo is not None:
            lo = _per_sample(self.lo, x)
            inside &= (x >= lo - _SLACK * abs(lo)).flatten(1).all(1)
        if self.hi is not None:
            hi = _per_sample(self.hi, x)
            inside &= (x <= hi + _SLACK * abs(hi)).flatten(1).all(1)
        return torch.where(inside, 0.0, math.inf).to(x.dtype)

    def prox(self, v, step=1.0):
        if self.lo is None and self.hi is None:
            return v
        return v.clamp(_per_sample(self.lo, v), _per_sample(self.hi, v))

    @property
    def convex_conj(self):
        symmetric = self.hi is not None and self.lo is not None and (
            torch.equal(torch.as_tensor(self.lo), -torch.as_tensor(self.hi)))
        if not symmetric:
            raise NotImplementedError("IndicatorBox: the conjugate is given for [-w, w] boxes only (w‖·‖₁)")
        return L1(self.hi)

    def __repr__(self):
        return f"IndicatorBox(lo={self.lo}, hi={self.hi})"


def nonnegative() -> IndicatorBox:
    """``ι_{x ≥ 0}``."""
    return IndicatorBox(0.0, None)


def _group_norm(q: torch.Tensor, dim: int) -> torch.Tensor:
    """``‖q_g‖₂`` along ``dim``, kept as a size-1 axis. ``(q*q).sum`` is much faster on the CPU than
    ``linalg.vector_norm`` over a non-contiguous axis."""
    return (q * q).sum(dim=dim, keepdim=True).sqrt_()


class GroupL1(Functional):
    """``F(q) = w Σ_g ‖q_g‖₂`` with groups along axis ``dim`` of the batch (``dim=2`` for
    gradients ``(B, C, 2, H, W)``: the (2,1)-norm); ``prox_{tF}`` shrinks each group's length by
    ``t·w``; ``F* = ι_{‖·_g‖₂ ≤ w}`` (:class:`IndicatorGroupBall`)."""

    def __init__(self, dim: int = 2, weight: Scalar = 1.0):
        self.dim, self.weight = dim, weight

    def __call__(self, q):
        return self.weight * _sum(_group_norm(q, self.dim))

    def smoothed(self, q, eps: float):
        """The smooth surrogate ``w Σ_g sqrt(‖q_g‖₂² + ε²)`` (Charbonnier) for gradient methods,
        ``(B,)``."""
        return self.weight * _sum(torch.sqrt((q * q).sum(dim=self.dim) + eps * eps))

    def prox(self, v, step=1.0):
        t = _per_sample(step, v) * _per_sample(self.weight, v)
        mag = _group_norm(v, self.dim)
        return v * (1.0 - t / mag.clamp_min(torch.finfo(v.dtype).tiny)).clamp_min(0.0)

    @property
    def convex_conj(self):
        return IndicatorGroupBall(self.dim, self.weight)

    def __repr__(self):
        return f"GroupL1(dim={self.dim})"


class IndicatorGroupBall(Functional):
    """``F = ι_{‖q_g‖₂ ≤ r}`` for every group along ``dim`` (``r``: a float or one per sample);
    ``prox_{tF}(q) = q / max(1, ‖q_g‖₂/r)``, the projection, for every ``t``; ``F* = r·GroupL1``."""

    def __init__(self, dim: int = 2, radius: Scalar = 1.0):
        self.dim, self.radius = dim, radius

    def __call__(self, q):
        r = _per_sample(self.radius, q)
        inside = (_group_norm(q, self.dim) <= r * (1 + _SLACK)).flatten(1).all(1)
        return torch.where(inside, 0.0, math.inf).to(q.dtype)

    def prox(self, v, step=1.0):
        scale = _group_norm(v, self.dim)
        if not (isinstance(self.radius, (int, float)) and self.radius == 1):
            r = _per_sample(self.radius, v)
            scale = scale / (r.clamp_min(torch.finfo(v.dtype).tiny) if isinstance(r, torch.Tensor)
                             else max(r, torch.finfo(v.dtype).tiny))
        return v / scale.clamp_min_(1.0)

    @property
    def convex_conj(self):
        return GroupL1(self.dim, self.radius)

    def __repr__(self):
        return f"IndicatorGroupBall(dim={self.dim})"


class TotalVariation(Functional):
    """Isotropic TV ``F(x) = w Σ_{c,i,j} ‖(∇x)_{c,:,i,j}‖₂ = w·GroupL1(∇x)`` on images
    ``(B, C, H, W)``. The dual ball :attr:`dual` ``= ι_{‖p_{c,:,i,j}‖₂ ≤ 1}`` (the conjugate of the
    (2,1)-norm) and the gradient operator (:meth:`gradient`, one per image shape) are what
    primal–dual solvers use; :meth:`prox` solves the dual problem (:meth:`prox_dual`)."""

    def __init__(self, weight: Scalar = 1.0, iterations: int = 5):
        self.weight = weight
        self.iterations = iterations
        self.norm = GroupL1(dim=2)
        self.dual = IndicatorGroupBall(dim=2, radius=1.0)
        self._grads: dict[tuple[int, ...], Gradient] = {}

    def gradient(self, shape) -> Gradient:
        """``∇`` for images of ``shape = (C, H, W)`` (built once per shape)."""
        shape = tuple(shape)
        if shape not in self._grads:
            self._grads[shape] = Gradient(shape)
        return self._grads[shape]

    def __call__(self, x):
        return self.weight * self.norm(self.gradient(x.shape[1:])(x))

    def smoothed(self, x, eps: float):
        """The smooth surrogate ``w Σ_{c,i,j} sqrt(‖(∇x)_{c,:,i,j}‖₂² + ε²)`` (Charbonnier) for
        gradient methods, ``(B,)``."""
        return self.weight * self.norm.smoothed(self.gradient(x.shape[1:])(x), eps)

    def prox(self, v, step=1.0):
        return self.prox_dual(v, step)[0]

    def prox_dual(self, v: torch.Tensor, step: float, p: torch.Tensor | None = None,
                  box: IndicatorBox | None = None, iterations: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, p)``: ``x = argmin ½‖x − v‖² + λ TV(x) + ι_box(x)`` with ``λ = step·w`` (a float > 0)
        and its dual ``p`` (``(B, C, 2, H, W)``, ``‖p_{c,:,i,j}‖ ≤ 1``, ``x = P_box(v − λ∇ᵀp)``),
        by ``iterations`` steps of the fast dual projected gradient from ``p`` (a warm start;
        default 0):
            x = P_box(v − λ∇ᵀq),   p⁺ = P_dual(q + ∇x / (8λ)),   q = p⁺ + (t−1)/t⁺ (p⁺ − p)."""
        lam = step * self.weight
        box = box or IndicatorBox()
        D = self.gradient(v.shape[1:])
        if p is None:
            p = v.new_zeros((v.shape[0], *D.out_shape))
        q, t = p, 1.0
        for _ in range(self.iterations if iterations is None else iterations):
            x = box.prox(v - lam * D.adjoint(q))
            p_new = self.dual.prox(q + D(x) / (GRADIENT_NORM_SQ * lam))
            t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
            q = p_new + ((t - 1.0) / t_new) * (p_new - p)
            p, t = p_new, t_new
        return box.prox(v - lam * D.adjoint(p)), p

    def __repr__(self):
        return f"TotalVariation(iterations={self.iterations})"
