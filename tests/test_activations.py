"""Proximal activations: Bregman identities, gradients, prox vs a numerical argmin, float32 safety."""
import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch import nn

from lifted_inverse.lifted import activations as A

CASES = {
    "identity": lambda: A.Identity(),
    "relu": lambda: A.ReLU(),
    "leaky_relu": lambda: A.LeakyReLU(0.2),
    "soft_threshold": lambda: A.SoftThreshold(0.3),
    "clip": lambda: A.Clip(0.7),
    "tanh": lambda: A.Tanh(),
    "sigmoid": lambda: A.Sigmoid(),
    "softmax": lambda: A.Softmax(),
}


def _inputs(name, act, seed=0, shape=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    # y inside dom Ψ: σ of another random point (covers the boundary of ReLU/clip too)
    y = act(2.0 * torch.randn(shape, generator=g, dtype=torch.float64))
    if name == "softmax":
        y = torch.softmax(3 * torch.randn(shape, generator=g, dtype=torch.float64), dim=1)
    return y, z


@pytest.mark.parametrize("name", CASES)
def test_bregman_bounds_and_zero(name):
    act = CASES[name]()
    y, z = _inputs(name, act)
    b = act.bregman(y, z)
    lower = 0.5 * ((y - act(z)) ** 2).sum(dim=1)
    assert b.shape == (y.shape[0],)
    assert bool((b >= lower - 1e-10).all()), (b, lower)
    assert float(act.bregman(act(z), z).abs().max()) < 1e-6


@pytest.mark.parametrize("name", CASES)
def test_grad_z_matches_autograd(name):
    act = CASES[name]()
    y, z = _inputs(name, act, seed=1)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(act.bregman(y, zz).sum(), zz)
    assert torch.allclose(g, act(z) - y, atol=1e-6, rtol=0)
    assert torch.allclose(act.grad_z(y, z), act(z) - y, atol=1e-12)


def _psi_np(act, name):
    """Ψ as a scalar numpy function (separable activations)."""
    def f(y):
        return float(act.psi_elementwise(torch.tensor([y], dtype=torch.float64))[0])
    return f


def _domain(name, act):
    if name == "clip":
        return -act.lam, act.lam
    return {"relu": (0.0, 50.0), "tanh": (-1 + 1e-15, 1 - 1e-15),
            "sigmoid": (1e-15, 1 - 1e-15)}.get(name, (-50.0, 50.0))


@pytest.mark.parametrize("name", [n for n in CASES if n != "softmax"])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_prox_matches_numerical_argmin(name, t):
    act = CASES[name]()
    g = torch.Generator().manual_seed(2)
    v = 1.5 * torch.randn(8, dtype=torch.float64, generator=g)
    p = act.prox(v, t)
    psi = _psi_np(act, name)
    lo, hi = _domain(name, act)
    for vi, pi in zip(v.tolist(), p.tolist()):
        res = so.minimize_scalar(lambda y, vi=vi: 0.5 * (y - vi) ** 2 + t * psi(y), bounds=(lo, hi),
                                 method="bounded", options={"xatol": 1e-12, "maxiter": 2000})
        # compare objective values and points (the objective is 1-strongly convex)
        obj = lambda y: 0.5 * (y - vi) ** 2 + t * psi(y)
        assert obj(pi) <= obj(res.x) + 1e-12
        assert abs(pi - res.x) < 1e-6


@pytest.mark.parametrize("name", [n for n in CASES if n != "softmax"])
def test_prox_F_is_argmin_of_muF(name):
    act = CASES[name]()
    mu = 0.7
    v = torch.linspace(-2.5, 2.5, 7, dtype=torch.float64)
    p = act.prox_F(v, mu)
    psi = _psi_np(act, name)
    lo, hi = _domain(name, act)
    for vi, pi in zip(v.tolist(), p.tolist()):
        res = so.minimize_scalar(lambda y, vi=vi: 0.5 * (y - vi) ** 2 + mu * (0.5 * y * y + psi(y)),
                                 bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
        assert abs(pi - res.x) < 1e-6


@pytest.mark.parametrize("t", [0.4, 1.0, 3.0])
def test_softmax_prox_matches_numerical_argmin(t):
    act = A.Softmax()
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 4, dtype=torch.float64, generator=g)
    p = act.prox(v, t)
    assert torch.allclose(p.sum(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    for vi, pi in zip(v.numpy(), p.numpy()):
        def obj(y, vi=vi):
            y = np.clip(y, 1e-300, None)
            return 0.5 * np.sum((y - vi) ** 2) + t * (np.sum(y * np.log(y)) - 0.5 * np.sum(y * y))
        res = so.minimize(obj, np.full(4, 0.25), method="SLSQP", bounds=[(1e-12, 1)] * 4,
                          constraints=[{"type": "eq", "fun": lambda y: y.sum() - 1}],
                          options={"ftol": 1e-16, "maxiter": 1000})
        assert obj(pi) <= res.fun + 1e-12
        assert np.abs(pi - res.x).max() < 1e-5


def test_softmax_bregman_is_cross_entropy_minus_entropy():
    act = A.Softmax()
    y, z = _inputs("softmax", act, seed=4)
    ce = -(y * torch.log_softmax(z, dim=1)).sum(dim=1)
    ent = -(y * torch.log(y)).sum(dim=1)
    assert torch.allclose(act.bregman(y, z), ce - ent, atol=1e-10)
    onehot = torch.eye(5, dtype=torch.float64)[[0, 3, 1, 4, 2, 0]]
    assert torch.allclose(act.bregman(onehot, z), nn.functional.cross_entropy(z, onehot.argmax(1),
                                                                               reduction="none"))


@pytest.mark.parametrize("name", CASES)
def test_float32_safety_for_large_inputs(name):
    act = CASES[name]()
    z = torch.tensor([[-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4]], dtype=torch.float32)
    y = act(z)
    for out in (y, act.bregman(y, z), act.bregman(act.project(0.3 * y), z), act.grad_z(y, z),
                act.prox(z, 0.5), act.prox_F(z, 2.0), act.conjugate(z)):
        assert bool(torch.isfinite(out).all()), (name, out)


@pytest.mark.parametrize("name", CASES)
def test_bregman_with_residual_matches_the_definition(name):
    """``(B, σ(z) − y)`` equals ``F(y) + F*(z) − ⟨y, z⟩`` from Ψ and F* coordinatewise (the box
    activations compute it in fewer passes), on random inputs in float64."""
    act = CASES[name]()
    y, z = _inputs(name, act, seed=3)
    value, r = act.bregman_with_residual(y, z)
    if act.separable:
        ref = (0.5 * y * y + act.psi_elementwise(y) + act.conjugate_elementwise(z) - y * z).sum(dim=1)
        assert torch.allclose(value, ref.clamp_min(0.0), atol=1e-12)
    else:        # softmax: F(y) = Σ y log y on the simplex, F*(z) = logsumexp(z)
        ref = (torch.special.xlogy(y, y) - y * z).sum(dim=1) + torch.logsumexp(z, dim=1)
        assert torch.allclose(value, ref.clamp_min(0.0), atol=1e-12)
        off = y.clone()
        off[0] = off[0] * 1.5                      # sample 0 leaves the simplex
        v_off, _ = act.bregman_with_residual(off, z)
        assert math.isinf(float(v_off[0])) and torch.allclose(v_off[1:], value[1:], atol=1e-12)
    assert torch.allclose(value, act.bregman(y, z), atol=1e-12)
    assert torch.allclose(r, act(z) - y, atol=1e-15)


@pytest.mark.parametrize("name", ["relu", "clip", "tanh", "sigmoid"])
def test_bregman_is_infinite_off_domain(name):
    act = CASES[name]()
    y = torch.tensor([[-3.0, 2.0]], dtype=torch.float64)
    assert math.isinf(float(act.bregman(y, torch.zeros_like(y))[0]))


def test_as_proximal_conversions_and_errors():
    assert isinstance(A.as_proximal(nn.ReLU()), A.ReLU)
    assert isinstance(A.as_proximal(nn.Hardtanh(-2, 2)), A.Clip)
    assert float(A.as_proximal(nn.Softshrink(0.25)).alpha) == pytest.approx(0.25)
    for bad in (nn.GELU(), nn.ELU(), nn.LeakyReLU(-0.5), nn.Hardtanh(0, 1)):
        with pytest.raises(TypeError, match="not a proximal map"):
            A.as_proximal(bad)
    with pytest.raises(ValueError, match="unknown name"):
        A.make_activation("swish")
    with pytest.raises(ValueError, match="t: prox step"):
        A.ReLU().prox(torch.zeros(2), -1.0)


@pytest.mark.parametrize("name", CASES)
def test_negative_prox_steps_are_rejected(name):
    """``prox`` and ``prox_F`` check the step once, for numbers and tensors alike."""
    act = CASES[name]()
    v = torch.zeros(2, 3, dtype=torch.float64)
    for bad in (-1.0, torch.tensor([[0.5], [-0.1]], dtype=torch.float64)):
        with pytest.raises(ValueError, match="t: prox step"):
            act.prox(v, bad)
        with pytest.raises(ValueError, match="t: prox step"):
            act.prox_F(v, bad)


def test_learnable_soft_threshold_gets_gradient():
    act = A.SoftThreshold(0.2, learnable=True)
    out = act(torch.linspace(-1, 2, 11)).sum()  # d/dα Σ S_α(v) = −(#v>α) + (#v<−α) ≠ 0
    out.backward()
    assert act.raw_alpha.grad is not None and act.raw_alpha.grad.abs() > 0
