"""The shared functionals: prox against its definition, conjugates by Moreau and Fenchel–Young, TV."""
import math

import pytest
import torch

from lifted_inverse.operators import Gradient
from lifted_inverse.reconstruction import tv_denoise
from lifted_inverse.reconstruction.functionals import (
    L1,
    GroupL1,
    IndicatorBox,
    IndicatorGroupBall,
    SquaredL2,
    TotalVariation,
    nonnegative,
)

DT = torch.float64
WEIGHTS = torch.tensor([0.3, 1.0, 2.5], dtype=DT)


def _rand(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


#: functionals with a closed-form conjugate, scalar and per-sample weights
CONJUGATE_PAIRS = {
    "l1": lambda w: L1(w),
    "squared-l2": lambda w: SquaredL2(w),
    "group-l1": lambda w: GroupL1(2, w),
    "group-ball": lambda w: IndicatorGroupBall(2, w),
    "box-symmetric": lambda w: IndicatorBox(-w, w),
}


def _inner(a, b):
    return (a * b).flatten(1).sum(1)


@pytest.mark.parametrize("name", CONJUGATE_PAIRS)
@pytest.mark.parametrize("weight", [0.7, WEIGHTS], ids=["scalar", "per-sample"])
def test_moreau_and_fenchel_young(name, weight):
    F = CONJUGATE_PAIRS[name](weight)
    v = 2 * _rand(3, 2, 2, 4, 5)
    for step in (0.5, 1.0, 3.0):
        # Moreau: v = prox_{tF}(v) + t prox_{F*/t}(v/t); prox_conj applies it, convex_conj.prox is direct
        assert torch.allclose(F.prox_conj(v, step), F.convex_conj.prox(v, step), atol=1e-12)
    # y = v - prox_F(v) is in ∂F(x) at x = prox_F(v): F(x) + F*(y) = <x, y> (and >= for any other y)
    x = F.prox(v, 1.0)
    y = v - x
    assert torch.allclose(F(x) + F.convex_conj(y), _inner(x, y), atol=1e-10)
    z = 0.1 * _rand(*v.shape, seed=1)
    assert bool((F(x + z) + F.convex_conj(y) >= _inner(x + z, y) - 1e-10).all())
    # the conjugate of the conjugate is the functional
    assert torch.allclose(F.convex_conj.convex_conj(x), F(x), atol=1e-12)


@pytest.mark.parametrize("F", [L1(0.4), SquaredL2(1.7), GroupL1(2, 0.6), TotalVariation(0.2, iterations=400)],
                         ids=["l1", "squared-l2", "group-l1", "tv"])
def test_prox_minimises_its_objective(F):
    """``prox_{tF}(v)`` has the least ``½‖x − v‖² + tF(x)`` among random perturbations of it."""
    v = _rand(2, 1, 2, 6, 7)[:, 0] if isinstance(F, TotalVariation) else _rand(2, 3, 2, 4, 4)
    t = 0.8
    x = F.prox(v, t)

    def objective(u):
        return 0.5 * ((u - v) ** 2).flatten(1).sum(1) + t * F(u)

    best = objective(x)
    for seed in range(20):
        for scale in (1e-1, 1e-3):
            assert bool((objective(x + scale * _rand(*v.shape, seed=seed + 2)) >= best - 1e-9).all())


def test_closed_forms():
    v = torch.tensor([[-2.0, -0.3, 0.0, 0.5, 3.0]], dtype=DT)
    assert torch.equal(L1(1.0).prox(v, 0.5), torch.tensor([[-1.5, 0.0, 0.0, 0.0, 2.5]], dtype=DT))
    assert torch.equal(SquaredL2(2.0).prox(v, 0.5), v / 2.0)
    assert torch.equal(IndicatorBox(-1.0, 1.0).prox(v), v.clamp(-1.0, 1.0))
    assert torch.equal(nonnegative().prox(v), v.clamp_min(0.0))
    assert torch.equal(IndicatorBox().prox(v), v)
    assert float(nonnegative()(v)) == math.inf and float(nonnegative()(v.abs())) == 0.0
    q = torch.tensor([[[3.0, 0.1], [4.0, 0.0]]], dtype=DT)  # groups along dim 1: lengths 5 and 0.1
    assert torch.allclose(IndicatorGroupBall(1, 2.0).prox(q), torch.tensor([[[1.2, 0.1], [1.6, 0.0]]], dtype=DT))
    assert torch.allclose(GroupL1(1, 1.0)(q), torch.tensor([5.1], dtype=DT))
    assert torch.allclose(GroupL1(1, 1.0).prox(q, 1.0), torch.tensor([[[2.4, 0.0], [3.2, 0.0]]], dtype=DT))


def test_per_sample_weights_act_per_sample():
    v = _rand(3, 2, 2, 4, 5)
    for make in CONJUGATE_PAIRS.values():
        batched = make(WEIGHTS)
        for b in range(3):
            single = make(float(WEIGHTS[b]))
            assert torch.allclose(batched.prox(v, 0.7)[b], single.prox(v[b:b + 1], 0.7)[0], atol=1e-14)
            assert torch.allclose(batched(v)[b], single(v[b:b + 1])[0])


def test_total_variation_value():
    x = _rand(2, 3, 6, 7)
    tv = TotalVariation()
    g = Gradient((3, 6, 7))(x)
    explicit = torch.sqrt(g[:, :, 0] ** 2 + g[:, :, 1] ** 2).flatten(1).sum(1)
    assert torch.allclose(tv(x), explicit)
    assert torch.allclose(TotalVariation(WEIGHTS[:2])(x), WEIGHTS[:2] * explicit)
    assert torch.allclose(tv(-2.5 * x + 4.0), 2.5 * explicit)  # absolutely homogeneous, constants cost 0
    step = torch.zeros(1, 1, 4, 4, dtype=DT)
    step[..., 2:] = 1.0
    assert float(tv(step)) == pytest.approx(4.0)  # a unit jump along a 4-pixel edge


def test_total_variation_prox_matches_pdhg_denoising_and_its_dual_certificate():
    """The dual FISTA prox and the TV-PDHG solver solve the same ROF problem; the returned dual
    ``p`` is feasible and reproduces ``x = v − λ∇ᵀp``."""
    v = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0), dtype=DT)
    lam = 0.1
    tv = TotalVariation()
    x, p = tv.prox_dual(v, lam, iterations=3000)
    assert torch.allclose(x, v - lam * tv.gradient((1, 12, 12)).adjoint(p), atol=1e-12)
    assert float(IndicatorGroupBall(2, 1.0)(p).max()) == 0.0
    ref = tv_denoise(v, lam, max_iter=20000, tol=1e-12).x
    assert float((x - ref).abs().max()) < 1e-5
    # warm start: 5 more steps from the converged dual stay put; from zero they do not
    x5, _ = tv.prox_dual(v, lam, p, iterations=5)
    assert float((x5 - x).abs().max()) < 1e-6
    assert float((tv.prox_dual(v, lam, iterations=5)[0] - x).abs().max()) > 1e-4
    # with a box: feasible, and no feasible perturbation has a smaller objective
    box = IndicatorBox(0.2, 0.8)
    xb, _ = tv.prox_dual(v, lam, box=box, iterations=3000)
    assert float(xb.min()) >= 0.2 and float(xb.max()) <= 0.8

    def objective(u):
        return 0.5 * ((u - v) ** 2).flatten(1).sum(1) + lam * tv(u)

    assert float((xb - x).abs().max()) > 0.02  # the box is active
    assert bool((objective(xb) <= objective(x.clamp(0.2, 0.8)) + 1e-7).all())
    for seed in range(10):
        u = box.prox(xb + 1e-2 * _rand(*v.shape, seed=seed))
        assert bool((objective(u) >= objective(xb) - 1e-7).all())


def test_conjugate_is_refused_where_there_is_none():
    with pytest.raises(NotImplementedError, match="IndicatorBox"):
        _ = IndicatorBox(0.0, 1.0).convex_conj


def test_smoothed_surrogates_bracket_the_functional():
    """``F ≤ F_ε ≤ F + w·(number of groups)·ε`` for the Charbonnier surrogates of L1, GroupL1 and
    TV; ``F_0 = F``; the surrogate has a finite gradient at 0; ½‖·‖² is its own surrogate."""
    from lifted_inverse.reconstruction.functionals import L1, GroupL1, SquaredL2, TotalVariation

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 6, 7), generator=gen, dtype=torch.float64)
    q = torch.randn((2, 1, 2, 6, 7), generator=gen, dtype=torch.float64)
    eps = 1e-2
    for f, v, groups in ((L1(2.0), x, 42), (GroupL1(2, 2.0), q, 42), (TotalVariation(2.0), x, 42)):
        exact, smooth = f(v), f.smoothed(v, eps)
        assert smooth.shape == (2,)
        assert torch.all(exact <= smooth) and torch.all(smooth <= exact + 2.0 * groups * eps + 1e-12)
        assert torch.allclose(f.smoothed(v, 0.0), exact)
        zero = torch.zeros_like(v, requires_grad=True)
        (grad,) = torch.autograd.grad(f.smoothed(zero, eps).sum(), zero)
        assert torch.isfinite(grad).all()
    assert torch.equal(SquaredL2(3.0).smoothed(x, eps), SquaredL2(3.0)(x))
