"""Proximal activations ``σ = prox_Ψ`` and their lifted Bregman penalties.

For a proper, convex, lower semi-continuous ``Ψ`` let ``F = ½‖·‖² + Ψ`` (1-strongly convex).
Then ``σ = prox_Ψ = ∇F*`` and the lifted Bregman penalty is the Fenchel–Young gap

    B_Ψ(y, z) = F(y) + F*(z) − ⟨y, z⟩ = ½‖y − z‖² + Ψ(y) − e_Ψ(z) ≥ ½‖y − σ(z)‖²,

with ``e_Ψ`` the Moreau envelope, ``B_Ψ(σ(z), z) = 0`` and ``∇_z B_Ψ(y, z) = σ(z) − y``.

Every activation is an ``nn.Module`` acting on tensors of shape ``(B, ...)``. Scalar
functionals (``psi``, ``conjugate``, ``bregman``) return per-sample sums of shape ``(B,)``;
``bregman`` is ``+inf`` where ``y`` lies outside ``dom Ψ``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """Sum over every non-batch dimension: ``(B, ...) -> (B,)``."""
    return t.reshape(t.shape[0], -1).sum(dim=1) if t.ndim > 1 else t


def _check_t(t) -> None:
    if isinstance(t, torch.Tensor):
        if bool((t < 0).any()):
            raise ValueError("t: prox step must be non-negative")
    elif t < 0:
        raise ValueError(f"t: prox step must be non-negative, got {t}")


class ProximalActivation(nn.Module):
    """Base class: an activation ``σ = prox_Ψ`` with its Bregman machinery.

    Subclasses implement ``forward`` (σ), ``psi_elementwise`` (Ψ, coordinatewise; +inf off-domain),
    ``conjugate_elementwise`` (F*), ``_prox`` (prox of tΨ for t ≥ 0; the public ``prox``
    and ``prox_F`` check t) and ``project`` (onto dom Ψ).
    """

    #: whether Ψ is separable over coordinates (all but softmax)
    separable: bool = True

    def psi_elementwise(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def conjugate_elementwise(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prox(self, v: torch.Tensor, t: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``prox_{tΨ}(v) = argmin_y ½‖y − v‖² + tΨ(y)`` (``t ≥ 0``, a number or a tensor
        broadcasting against ``v``)."""
        _check_t(t)
        return self._prox(v, t)

    def _prox(self, v: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """:meth:`prox` for a step already known to be ``≥ 0`` (subclasses implement it)."""
        raise NotImplementedError

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """Projection (or safe clamp) onto ``dom Ψ``."""
        return y

    def in_domain(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of coordinates of ``y`` inside ``dom Ψ``."""
        return torch.ones_like(y, dtype=torch.bool)

    # ---- derived quantities ---------------------------------------------------------------
    def psi(self, y: torch.Tensor) -> torch.Tensor:
        """``Ψ(y)`` per sample, shape ``(B,)``."""
        return _per_sample(self.psi_elementwise(y))

    def conjugate(self, z: torch.Tensor) -> torch.Tensor:
        """``F*(z) = sup_y ⟨y, z⟩ − ½‖y‖² − Ψ(y) = ½‖z‖² − e_Ψ(z)`` per sample, shape ``(B,)``."""
        return _per_sample(self.conjugate_elementwise(z))

    def bregman_elementwise(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``½y² + Ψ(y) + F*(z) − yz`` coordinatewise (separable activations only)."""
        return 0.5 * y * y + self.psi_elementwise(y) + self.conjugate_elementwise(z) - y * z

    def bregman(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``B_Ψ(y, z) = F(y) + F*(z) − ⟨y, z⟩`` per sample, shape ``(B,)`` (+inf off-domain).

        Clamped at 0 from below: the identity is ≥ 0 exactly, rounding can make it −1e-16.
        """
        if y.shape != z.shape:
            raise ValueError(f"y, z: shapes must match, got {tuple(y.shape)} and {tuple(z.shape)}")
        return _per_sample(self.bregman_elementwise(y, z)).clamp_min(0.0)

    def grad_z(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``∇_z B_Ψ(y, z) = σ(z) − y`` (no σ′ needed)."""
        return self(z) - y

    def bregman_with_residual(self, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B_Ψ(y, z) per sample, σ(z) − y)``: the penalty and its z-gradient together (block
        solvers need both; subclasses share the passes over the tensors)."""
        return self.bregman(y, z), self.grad_z(y, z)

    def prox_F(self, v: torch.Tensor, mu: float | torch.Tensor) -> torch.Tensor:
        """``prox_{μF}(v) = prox_{μ/(1+μ) Ψ}(v / (1+μ))`` with ``F = ½‖·‖² + Ψ``."""
        _check_t(mu)
        return self._prox(v / (1.0 + mu), mu / (1.0 + mu))

    def extra_repr(self) -> str:
        return ""


class Identity(ProximalActivation):
    """``σ(z) = z``, ``Ψ = 0``, ``B(y, z) = ½(y − z)²``."""

    def forward(self, z):
        return z

    def psi_elementwise(self, y):
        return torch.zeros_like(y)

    def conjugate_elementwise(self, z):
        return 0.5 * z * z

    def bregman_elementwise(self, y, z):
        return 0.5 * (y - z) ** 2

    def _prox(self, v, t):
        return v


class _IndicatorActivation(ProximalActivation):
    """Ψ = indicator of a box; ``σ`` = projection; ``B = ½(y − z)² − ½dist(z, box)²`` on the box."""

    def _lower_upper(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, z):
        lo, hi = self._lower_upper()
        return z.clamp(lo, hi)

    def project(self, y):
        return self(y)

    def in_domain(self, y):
        lo, hi = self._lower_upper()
        ok = torch.ones_like(y, dtype=torch.bool)
        if lo is not None:
            ok &= y >= lo
        if hi is not None:
            ok &= y <= hi
        return ok

    def psi_elementwise(self, y):
        zero = torch.zeros_like(y)
        return torch.where(self.in_domain(y), zero, torch.full_like(y, math.inf))

    def conjugate_elementwise(self, z):
        dist = z - self(z)
        return 0.5 * z * z - 0.5 * dist * dist

    def bregman(self, y, z):
        """Per sample ``Σ ½(y − z)² − ½dist(z, box)²``, ``+inf`` where some ``y ∉ box``
        (:meth:`bregman_with_residual`)."""
        return self.bregman_with_residual(y, z)[0]

    def bregman_with_residual(self, y, z):
        """``B = −½⟨r, y + σ(z) − 2z⟩`` per sample with ``r = σ(z) − y``, since
        ``(y − z)² − (z − σ(z))² = (y − σ(z))(y + σ(z) − 2z)``; ``+inf`` where ``y`` leaves the box
        (per-sample min/max). Float arithmetic only, six passes over the tensors: boolean masks
        and ``where`` over feature maps cost many times a multiply in torch's CPU kernels
        (docs/results.md)."""
        if y.shape != z.shape:
            raise ValueError(f"y, z: shapes must match, got {tuple(y.shape)} and {tuple(z.shape)}")
        c = self(z)
        r = c - y
        s = torch.add(y, c).sub_(z, alpha=2.0)
        lo, hi = self._lower_upper()
        flat = y.reshape(y.shape[0], -1) if y.ndim > 1 else y.unsqueeze(1)   # per sample
        if y.ndim > 1:    # vecdot: aminmax along a dim and bmm with one column are slower on CPU
            value = torch.linalg.vecdot(r.reshape(flat.shape), s.reshape(flat.shape))
        else:             # one coordinate per entry (as _per_sample)
            value = r * s
        value = value.mul_(-0.5).clamp_min_(0.0)
        off = None        # only the reductions a bound needs (ReLU: the minimum)
        if lo is not None:
            off = flat.amin(dim=1) < lo
        if hi is not None:
            above = flat.amax(dim=1) > hi
            off = above if off is None else off.logical_or_(above)
        return (value if off is None else value.masked_fill_(off, math.inf)), r

    def _prox(self, v, t):
        return self(v)


class ReLU(_IndicatorActivation):
    """``σ(z) = max(z, 0)``, Ψ = ι_{y ≥ 0}, ``B(y, z) = ½y² − yz + ½max(z, 0)²`` for y ≥ 0."""

    def _lower_upper(self):
        return 0.0, None

    def forward(self, z):
        return torch.relu(z)   # = clamp(z, 0); autograd's subgradient at 0 is 0, as for nn.ReLU


class Clip(_IndicatorActivation):
    """``σ(z) = clip(z, −λ, λ)``, Ψ = ι_{[−λ, λ]}, ``B = ½(y − z)² − ½dist(z, [−λ, λ])²``."""

    def __init__(self, lam: float = 1.0):
        super().__init__()
        if not lam > 0:
            raise ValueError(f"lam: clipping level must be positive, got {lam}")
        self.lam = float(lam)

    def _lower_upper(self):
        return -self.lam, self.lam

    def extra_repr(self):
        return f"lam={self.lam}"


class LeakyReLU(ProximalActivation):
    """``σ(z) = z`` for z ≥ 0, ``a z`` for z < 0 (0 < a ≤ 1).

    ``Ψ(y) = ½(1/a − 1) min(y, 0)²``, ``F*(z) = ½max(z, 0)² + ½a min(z, 0)²``.
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not 0 < negative_slope <= 1:
            raise ValueError(
                f"negative_slope: a proximal leaky ReLU needs 0 < slope <= 1, got {negative_slope}"
            )
        self.negative_slope = float(negative_slope)

    def forward(self, z):
        return torch.where(z >= 0, z, self.negative_slope * z)

    def psi_elementwise(self, y):
        c = 1.0 / self.negative_slope - 1.0
        return 0.5 * c * y.clamp_max(0.0) ** 2

    def conjugate_elementwise(self, z):
        return 0.5 * z.clamp_min(0.0) ** 2 + 0.5 * self.negative_slope * z.clamp_max(0.0) ** 2

    def _prox(self, v, t):
        c = 1.0 / self.negative_slope - 1.0
        return torch.where(v >= 0, v, v / (1.0 + t * c))

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class SoftThreshold(ProximalActivation):
    """``σ(z) = sign(z) max(|z| − α, 0)``, Ψ = α|·|, ``F*(z) = ½max(|z| − α, 0)²``.

    ``B(y, z) = ½(y − z)² + α|y| − h_α(z)`` with the Huber function ``h_α``. With
    ``learnable=True``, α is a parameter kept positive by ``α = softplus(ρ)``.
    """

    def __init__(self, alpha: float = 0.1, learnable: bool = False):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha: threshold must be positive, got {alpha}")
        raw = torch.tensor(float(alpha)).expm1().log()  # softplus^{-1}(alpha)
        if learnable:
            self.raw_alpha = nn.Parameter(raw)
        else:
            self.register_buffer("raw_alpha", raw)

    @property
    def alpha(self) -> torch.Tensor:
        return nnf.softplus(self.raw_alpha)

    def _a(self, like):
        return self.alpha.to(dtype=like.dtype, device=like.device)

    def forward(self, z):
        return self.prox(z, 1.0)

    def psi_elementwise(self, y):
        return self._a(y) * y.abs()

    def conjugate_elementwise(self, z):
        return 0.5 * (z.abs() - self._a(z)).clamp_min(0.0) ** 2

    def _prox(self, v, t):
        return torch.sign(v) * (v.abs() - t * self._a(v)).clamp_min(0.0)

    def extra_repr(self):
        return f"alpha={float(self.alpha.detach()):.4g}, learnable={isinstance(self.raw_alpha, nn.Parameter)}"


def _xlogx(y: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(y, y)


def _solve_monotone(
    equation, v: torch.Tensor, lo: float, hi: float, y0: torch.Tensor, iterations: int = 60
) -> torch.Tensor:
    """Solve ``g(y) = v`` for increasing ``g`` on ``(lo, hi)`` by safeguarded Newton.

    ``equation(y) -> (g(y), g'(y))``. Keeps a bracket and bisects whenever Newton leaves it, so it
    converges for every ``v``; 60 iterations reach machine precision in float64.
    """
    a = torch.full_like(v, lo)
    b = torch.full_like(v, hi)
    y = y0.clamp(lo, hi)
    y = torch.where((y <= lo) | (y >= hi), 0.5 * (a + b), y)
    for _ in range(iterations):
        g, dg = equation(y)
        r = g - v
        a = torch.where(r < 0, y, a)
        b = torch.where(r > 0, y, b)
        newton = y - r / dg
        inside = (newton > a) & (newton < b) & torch.isfinite(newton)
        y_new = torch.where(inside, newton, 0.5 * (a + b))
        if bool((y_new == y).all()):
            break
        y = y_new
    return y


class _LegendreInterval(ProximalActivation):
    """An activation whose ``F = ½‖·‖² + Ψ`` is a Legendre function on ``[lower, upper]``
    (elementwise), so ``σ = ∇F*`` and ``prox_{tΨ}(v)`` solves ``(1 − t) y + t F'(y) = v``, strictly
    increasing in ``y``. Subclasses give ``forward`` (σ), ``_F``, ``_dF``, ``_ddF`` and
    ``conjugate_elementwise`` (``F*``); the domain checks, Ψ, ``B_Ψ`` and the prox are shared."""

    lower = -1.0
    upper = 1.0

    def _F(self, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _dF(self, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _ddF(self, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, y):
        e = torch.finfo(y.dtype).eps
        return y.clamp(self.lower + e, self.upper - e)

    def in_domain(self, y):
        return (y >= self.lower) & (y <= self.upper)

    def psi_elementwise(self, y):
        value = self._F(y.clamp(self.lower, self.upper)) - 0.5 * y * y
        return torch.where(self.in_domain(y), value, torch.full_like(y, math.inf))

    def bregman_elementwise(self, y, z):
        value = self._F(y.clamp(self.lower, self.upper)) + self.conjugate_elementwise(z) - y * z
        return torch.where(self.in_domain(y), value, torch.full_like(y, math.inf))

    def _prox(self, v, t):
        if not isinstance(t, torch.Tensor) and t == 1.0:
            return self.forward(v)
        t = torch.as_tensor(t, dtype=v.dtype, device=v.device)

        def equation(y):
            return (1 - t) * y + t * self._dF(y), (1 - t) + t * self._ddF(y)

        e = torch.finfo(v.dtype).eps
        return _solve_monotone(equation, v, self.lower + e, self.upper - e, self.forward(v))


class Tanh(_LegendreInterval):
    """``σ = tanh``, ``F(y) = ½[(1+y)log(1+y) + (1−y)log(1−y)]`` on |y| ≤ 1, ``F*(z) = log cosh z``.

    ``prox_{tΨ}(v)`` solves ``(1 − t) y + t artanh(y) = v``.
    """

    lower, upper = -1.0, 1.0

    def forward(self, z):
        return torch.tanh(z)

    def _F(self, y):
        return 0.5 * (_xlogx(1 + y) + _xlogx(1 - y))

    def _dF(self, y):
        return torch.atanh(y)

    def _ddF(self, y):
        return 1 / (1 - y * y)

    def conjugate_elementwise(self, z):
        a = z.abs()
        return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class Sigmoid(_LegendreInterval):
    """``σ(z) = 1/(1 + e^{−z})``, ``F(y) = y log y + (1−y) log(1−y)`` on [0, 1], ``F*(z) = softplus(z)``.

    ``prox_{tΨ}(v)`` solves ``(1 − t) y + t logit(y) = v``.
    """

    lower, upper = 0.0, 1.0

    def forward(self, z):
        return torch.sigmoid(z)

    def _F(self, y):
        return _xlogx(y) + _xlogx(1 - y)

    def _dF(self, y):
        return torch.logit(y)

    def _ddF(self, y):
        return 1 / (y * (1 - y))

    def conjugate_elementwise(self, z):
        return nnf.softplus(z)


class Softmax(ProximalActivation):
    """Vector activation over ``dim=1``: ``σ(z) = softmax(z)``, ``F(y) = Σ y_i log y_i + ι_Δ(y)``.

    ``F*(z) = logsumexp(z)``, ``B(y, z) = KL(y ‖ softmax(z))`` (cross-entropy minus entropy).
    ``prox_{tΨ}(v)``: ``y_i = g^{-1}(v_i − ν)`` with ``g(y) = (1 − t) y + t log y`` and the multiplier
    ``ν`` fixed by ``Σ y_i = 1`` (bisection).
    """

    separable = False

    def forward(self, z):
        return torch.softmax(z, dim=1)

    def project(self, y):
        e = torch.finfo(y.dtype).eps
        y = y.clamp_min(e)
        return y / y.sum(dim=1, keepdim=True)

    def in_domain(self, y):
        tol = 1e3 * torch.finfo(y.dtype).eps
        on_simplex = ((y.sum(dim=1, keepdim=True) - 1).abs() <= tol) & (y >= 0).all(dim=1, keepdim=True)
        return on_simplex.expand_as(y)

    def _F(self, y):
        return _per_sample(_xlogx(y.clamp_min(0)))

    def psi(self, y):
        value = self._F(y) - 0.5 * _per_sample(y * y)
        ok = _per_sample(~self.in_domain(y)) == 0
        return torch.where(ok, value, torch.full_like(value, math.inf))

    def conjugate(self, z):
        return torch.logsumexp(z, dim=1).reshape(z.shape[0], -1).sum(dim=1)

    def bregman(self, y, z):
        if y.shape != z.shape:
            raise ValueError(f"y, z: shapes must match, got {tuple(y.shape)} and {tuple(z.shape)}")
        value = self._F(y) + self.conjugate(z) - _per_sample(y * z)
        ok = _per_sample(~self.in_domain(y)) == 0
        return torch.where(ok, value.clamp_min(0.0), torch.full_like(value, math.inf))

    def bregman_with_residual(self, y, z):
        """``B = Σ y log y + lse(z) − ⟨y, z⟩`` and ``r = exp(z − lse(z)) − y`` from one
        ``logsumexp`` (``lse`` over ``dim=1``); ``+inf`` off the simplex, tested per sample."""
        if y.shape != z.shape:
            raise ValueError(f"y, z: shapes must match, got {tuple(y.shape)} and {tuple(z.shape)}")
        n = y.shape[0]
        lse = torch.logsumexp(z, dim=1, keepdim=True)
        r = torch.exp(z - lse).sub_(y)
        value = (_per_sample(_xlogx(y.clamp_min(0)) - y * z) + lse.reshape(n, -1).sum(dim=1)).clamp_min(0.0)
        tol = 1e3 * torch.finfo(y.dtype).eps
        off = ((y.sum(dim=1) - 1).abs().reshape(n, -1).amax(dim=1) > tol).logical_or_(y.reshape(n, -1).amin(dim=1) < 0)
        return value.masked_fill_(off, math.inf), r

    def bregman_elementwise(self, y, z):
        raise TypeError("Softmax is not separable: use bregman(y, z)")

    def psi_elementwise(self, y):
        raise TypeError("Softmax is not separable: use psi(y)")

    def conjugate_elementwise(self, z):
        raise TypeError("Softmax is not separable: use conjugate(z)")

    def _prox(self, v, t):
        if not isinstance(t, torch.Tensor) and t == 1.0:
            return torch.softmax(v, dim=1)
        t = torch.as_tensor(t, dtype=v.dtype, device=v.device)
        e = torch.finfo(v.dtype).eps

        def invert_g(c):
            def equation(y):
                return (1 - t) * y + t * torch.log(y), (1 - t) + t / y

            return _solve_monotone(equation, c, e, 1.0, torch.softmax(v, dim=1))

        # Σ_i g^{-1}(v_i − ν) decreases in ν. At ν = max v − g(1) the largest y_i is 1 (sum ≥ 1);
        # at ν = max v − g(1/n) every y_i ≤ 1/n (sum ≤ 1): bisect between them.
        n = v.shape[1]
        vmax = v.amax(dim=1, keepdim=True)
        lo = vmax - (1 - t)
        hi = vmax - ((1 - t) / n + t * math.log(1.0 / n))
        for _ in range(200):
            nu = 0.5 * (lo + hi)
            above = invert_g(v - nu).sum(dim=1, keepdim=True) > 1
            lo = torch.where(above, nu, lo)
            hi = torch.where(above, hi, nu)
            if bool(((hi - lo) <= 2 * e * (1 + vmax.abs())).all()):
                break
        y = invert_g(v - 0.5 * (lo + hi))
        return y / y.sum(dim=1, keepdim=True)


ACTIVATIONS = {
    "identity": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "soft_threshold": SoftThreshold,
    "clip": Clip,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softmax": Softmax,
}


def make_activation(name: str, **kwargs) -> ProximalActivation:
    """Build a proximal activation by name (see ``ACTIVATIONS``)."""
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation: unknown name {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
    return cls(**kwargs)


_TORCH_EQUIVALENTS = {
    nn.Identity: lambda m: Identity(),
    nn.ReLU: lambda m: ReLU(),
    nn.Tanh: lambda m: Tanh(),
    nn.Sigmoid: lambda m: Sigmoid(),
    nn.Hardtanh: lambda m: Clip(m.max_val) if m.min_val == -m.max_val else None,
    nn.Softshrink: lambda m: SoftThreshold(m.lambd),
    nn.LeakyReLU: lambda m: LeakyReLU(m.negative_slope) if 0 < m.negative_slope <= 1 else None,
    nn.Softmax: lambda m: Softmax() if m.dim in (1, -1) else None,
}


def as_proximal(module: nn.Module) -> ProximalActivation:
    """Return ``module`` as a :class:`ProximalActivation`, converting torch equivalents.

    Raises ``TypeError`` naming the module when it has no proximal form (e.g. GELU, ELU, SiLU).
    """
    if isinstance(module, ProximalActivation):
        return module
    convert = _TORCH_EQUIVALENTS.get(type(module))
    converted = convert(module) if convert is not None else None
    if converted is None:
        raise TypeError(
            f"activation {module!r} is not a proximal map σ = prox_Ψ (no Ψ exists); use one of "
            f"{sorted(ACTIVATIONS)} or their torch equivalents (ReLU, Tanh, Sigmoid, Hardtanh(-λ, λ), "
            "Softshrink, LeakyReLU(0<a<=1), Softmax(dim=1))"
        )
    return converted
