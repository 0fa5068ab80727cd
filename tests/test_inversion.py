"""Stable inversion of pretrained networks (lifted_inverse.inversion)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from lifted_inverse.datasets import shepp_logan
from lifted_inverse.inversion import (
    a_priori_alpha,
    bregman_error,
    bregman_noise,
    continuation,
    discrepancy_principle,
    invert,
    invert_deep,
    invert_gradient,
    invert_single_layer,
    pretrained,
    rate_bound,
    relative_delta,
    source_condition_pair,
)
from lifted_inverse.inversion.regularizers import TotalVariation, make_regularizer
from lifted_inverse.lifted import AffineLayer, ResidualBlock, SkipLayer, lift
from lifted_inverse.lifted.activations import Identity, ReLU, Sigmoid
from lifted_inverse.lifted.inverse import LiftedInversion
from lifted_inverse.networks import load_checkpoint, save_checkpoint

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def small_perceptron(n=16, m=128, seed=0):
    return pretrained.perceptron(n, m, seed=seed, dtype=DT)


def conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(6 * 3 * 3, 20),
    ).to(DT).requires_grad_(False)


def res_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*[
        ResidualBlock(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))
        for _ in range(2)
    ]).to(DT).requires_grad_(False)


class Layer:
    """The one lifted layer ``u ↦ σ(W vec(u) + b)`` of a single-layer model, on input-shaped ``u``."""

    def __init__(self, model, shape):
        self.net = lift(model, shape)
        assert len(self.net.layers) == 1
        self.layer = self.net.layers[0]
        self.activation = self.layer.activation

    def pre_activation(self, u):
        return self.layer.pre_activation([u.reshape(u.shape[0], *self.net.state_shapes[0])])

    def __call__(self, u):
        return self.activation(self.pre_activation(u))

    def adjoint(self, r):
        """``Wᵀ r`` back in the input shape."""
        return self.layer.input_adjoint(0, r).reshape(r.shape[0], *self.net.input_shape)


def single_layer(model=None, shape=(1, 16, 16)):
    return Layer(small_perceptron() if model is None else model, shape)


# ---- layer description ------------------------------------------------------------------------
@pytest.mark.parametrize("build, shape", [(small_perceptron, (1, 16, 16)), (conv_net, (1, 11, 11)),
                                          (res_net, (1, 8, 8))])
def test_lifted_network_reproduces_forward_and_adjoints(build, shape):
    model = build()
    net = lift(model, shape)
    x = torch.rand((3, *shape), dtype=DT, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(net.forward_states(x)[-1], model(x), atol=1e-12)
    gen = torch.Generator().manual_seed(2)
    for layer in net.layers:
        for k, s in enumerate(layer.inputs):   # ⟨A_k v, r⟩ = ⟨v, A_kᵀ r⟩ with the other inputs at 0
            v = torch.randn((2, *net.state_shapes[s]), dtype=DT, generator=gen)
            r = torch.randn((2, *layer.out_shape), dtype=DT, generator=gen)
            zeros = [torch.zeros((2, *net.state_shapes[t]), dtype=DT) for t in layer.inputs]
            lin = layer.pre_activation([v if j == k else zeros[j] for j in range(len(zeros))]) - \
                layer.pre_activation(zeros)
            lhs, rhs = float((lin * r).sum()), float((v * layer.input_adjoint(k, r)).sum())
            assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_fidelity_gradient_needs_no_backprop():
    """∇_u B_Ψ(f, Wu + b) = Wᵀ(σ(Wu + b) − f) equals autograd's gradient, and it is the u-block
    gradient of the lifted inversion problem."""
    stage = single_layer(small_perceptron(8, 40), (1, 8, 8))
    gen = torch.Generator().manual_seed(2)
    u = torch.rand((2, 1, 8, 8), dtype=DT, generator=gen).requires_grad_(True)
    f = torch.rand((2, 40), dtype=DT, generator=gen)
    value = stage.activation.bregman(f, stage.pre_activation(u)).sum()
    auto, = torch.autograd.grad(value, u)
    with torch.no_grad():
        ours = stage.adjoint(stage(u) - f)
        problem = LiftedInversion(stage.net, f, make_regularizer("l2"), 0.0, u.detach())
        fidelity, grad = problem.input_value_and_gradient(u.detach())
    assert torch.allclose(auto, ours, atol=1e-9)
    assert torch.allclose(grad, ours, atol=1e-12)
    assert torch.allclose(fidelity.sum(), value.detach(), atol=1e-12)


# ---- noise of level δ ---------------------------------------------------------------------------
@pytest.mark.parametrize("act", [ReLU(), Sigmoid(), Identity()])
def test_bregman_noise_has_the_prescribed_level(act):
    z = torch.randn((3, 50), dtype=DT, generator=torch.Generator().manual_seed(3))
    delta = torch.tensor([0.3, 0.05, 1.0], dtype=DT)
    f = bregman_noise(act, z, delta, seed=4)
    assert bool(act.in_domain(f).all())
    assert torch.allclose(act.bregman(f, z), delta ** 2, rtol=1e-6)


def test_relative_noise_level_for_identity_output():
    clean = torch.randn((2, 30), dtype=DT, generator=torch.Generator().manual_seed(5))
    delta = relative_delta(clean, 0.05)
    f = bregman_noise(Identity(), clean, delta, seed=1)
    rel = torch.linalg.vector_norm(f - clean, dim=1) / torch.linalg.vector_norm(clean, dim=1)
    assert torch.allclose(rel, torch.full_like(rel, 0.05), rtol=1e-6)


# ---- single layer --------------------------------------------------------------------------------
def test_tv_rate_where_the_theorem_applies():
    """Acceptance: for (u†, v†) with Wᵀv† ∈ ∂TV(u†) and f^δ ± αv† in dom Ψ (ReLU: ≥ 0), the
    measured D_TV(u†, u_α) with α = cδ stays below the theorem's bound and decays at the rate O(δ)
    (fitted slope ≥ 0.8)."""
    stage = single_layer()
    reg = TotalVariation(prox_iterations=20)
    pair = source_condition_pair(stage.net, shepp_logan(16)[None].to(DT), 1.0, reg, iterations=5000)
    assert pair.residual < 1e-6
    assert float(pair.v.abs().sum()) > 0 and bool((pair.v[0, pair.support] != 0).any())
    off_support = torch.ones(pair.v.shape[1], dtype=torch.bool)
    off_support[pair.support] = False
    assert bool((pair.v[0, off_support] == 0).all())
    c = math.sqrt(2.0) / float(pair.v.norm())
    z = stage.pre_activation(pair.u)
    deltas, errors, previous = [], [], None
    for eps in (0.04, 0.02, 0.01, 0.005):
        delta = float(relative_delta(stage.activation(z), eps))
        f = bregman_noise(stage.activation, z, delta, seed=1)
        alpha = c * delta
        assert bool((f - alpha * pair.v.abs() >= 0).all())          # f^δ ± αv† inside dom Ψ
        bound = float(rate_bound(stage.activation, f, pair.v, delta, alpha))
        assert bound == pytest.approx(2 * math.sqrt(2) * float(pair.v.norm()) * delta, rel=1e-9)
        warm = {} if previous is None else {"u0": previous.u, "state": previous.state}
        res = invert_single_layer(stage.net, f, alpha, reg, iterations=3000, tol=1e-9, **warm)
        previous = res
        deltas.append(delta)
        errors.append(float(bregman_error(res, pair.u)))
        assert errors[-1] <= bound, (eps, errors[-1], bound)
    slope = np.polyfit(np.log(deltas), np.log(errors), 1)[0]
    assert slope >= 0.8, (slope, errors)
    assert errors[-1] < errors[0] / 4


def test_rate_bound_is_infinite_outside_the_domain_of_psi():
    relu = ReLU()
    f = torch.tensor([[0.0, 2.0]], dtype=DT)
    inside = torch.tensor([[0.0, 1.0]], dtype=DT)
    assert float(rate_bound(relu, f, inside, 0.1, 0.5)) == pytest.approx(2 * 0.01 / 0.5 + 0.5 * 1.0)
    assert math.isinf(float(rate_bound(relu, f, inside, 0.1, 3.0)))     # f − αv < 0 on row 2
    assert math.isinf(float(rate_bound(relu, f, torch.tensor([[1.0, 0.0]], dtype=DT), 0.1, 0.5)))


def test_fista_and_pdhg_reach_the_same_tv_solution():
    model = small_perceptron(8, 48)
    f = model(shepp_logan(8)[None].to(DT))
    a = invert_single_layer(model, f, 2.0, TotalVariation("fista"), input_shape=(1, 8, 8), iterations=5000,
                            tol=1e-10)
    b = invert_single_layer(model, f, 2.0, TotalVariation("pdhg"), input_shape=(1, 8, 8), iterations=20000,
                            tol=1e-11)
    assert a.objective == pytest.approx(b.objective, rel=1e-5)
    assert float(torch.linalg.vector_norm(a.u - b.u) / torch.linalg.vector_norm(b.u)) < 1e-2


@pytest.mark.parametrize("reg", ["l2", "l1"])
def test_smooth_and_sparse_regularisers_satisfy_optimality(reg):
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU()).to(DT).requires_grad_(False)
    stage = single_layer(model, (30,))
    gen = torch.Generator().manual_seed(6)
    f = stage(torch.randn((2, 30), dtype=DT, generator=gen))
    res = invert_single_layer(stage.net, f, 0.1, reg, iterations=20000, tol=1e-13)
    with torch.no_grad():
        grad = stage.adjoint(stage(res.u) - f)
    if reg == "l2":  # 0 = Wᵀ(σ(Wu+b) − f) + αu
        assert float((grad + 0.1 * res.u).abs().max()) < 1e-6
    else:  # |∇| ≤ α where u = 0, ∇ = −α sign(u) elsewhere
        nz = res.u != 0
        assert float((grad[nz] + 0.1 * torch.sign(res.u[nz])).abs().max()) < 1e-6
        assert float(grad[~nz].abs().max()) <= 0.1 + 1e-6
    # the objective history decreases overall (FISTA with restart, not strictly monotone)
    assert res.history["objective"][-1] < 0.5 * res.history["objective"][0]


@pytest.mark.parametrize("reg", ["l2", "tv"])
def test_single_layer_is_the_lifted_problem_without_hidden_states(reg):
    """With no hidden state a lifted sweep is one FISTA step on u whose momentum carries over, so
    the deep solver reproduces the single-layer solver's iterates (the rate theorem's solver)."""
    net = lift(small_perceptron(8, 48), (1, 8, 8))
    f = net.forward_states(shepp_logan(8)[None].to(DT))[-1]
    u0 = torch.full((1, 1, 8, 8), 0.5, dtype=DT)
    one = invert_single_layer(net, f, 0.5, reg, u0=u0, iterations=60, tol=0.0)
    deep = invert_deep(net, f, 0.5, reg, u0=u0, iterations=60, inner_u=1, tol=0.0)
    assert torch.allclose(one.u, deep.u, atol=1e-12)


def test_callbacks_can_stop_and_tolerance_converges():
    net = lift(small_perceptron(8, 48), (1, 8, 8))
    f = net.forward_states(shepp_logan(8)[None].to(DT))[-1]
    seen = []
    res = invert_single_layer(net, f, 1.0, "tv", iterations=100,
                              callbacks=[lambda k, u, rec: seen.append(rec["objective"]) or k >= 7])
    assert res.iterations == 7 and len(seen) == 7 and not res.converged
    res = invert_single_layer(net, f, 1.0, "tv", iterations=20000, tol=1e-6)
    assert res.converged and res.iterations < 20000 and res.history["change"][-1] <= 1e-6


# ---- deep ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, shape", [(conv_net, (1, 11, 11)), (res_net, (1, 8, 8))])
def test_lifted_energy_vanishes_at_the_network_states(build, shape):
    model = build()
    u = torch.rand((2, *shape), dtype=DT, generator=torch.Generator().manual_seed(7))
    problem = LiftedInversion(lift(model, shape), model(u), make_regularizer("l2"), 0.0, u, rho=3.0)
    assert float(problem.energy()) < 1e-9
    for s in problem.net.free_states:
        saved = problem.states[s]
        problem.states[s] = saved + 0.1
        assert float(problem.energy()) > 1e-3
        problem.states[s] = saved


def test_inversion_penalties_and_weights():
    """λ per block on the affine layers, ρ on skip layers; the output tie carries λ_L (affine
    output) or ρ (residual output)."""
    conv = LiftedInversion(lift(conv_net(), (1, 11, 11)), torch.zeros((1, 20), dtype=DT),
                           make_regularizer("l2"), 0.0, torch.zeros((1, 1, 11, 11), dtype=DT),
                           weights=[3.0, 2.0, 5.0], rho=7.0)
    assert [p.scale for p in conv.objective.penalties] == [3.0, 2.0, 5.0]
    res = LiftedInversion(lift(res_net(), (1, 8, 8)), torch.zeros((1, 1, 8, 8), dtype=DT),
                          make_regularizer("l2"), 0.0, torch.zeros((1, 1, 8, 8), dtype=DT),
                          weights=[3.0, 2.0], rho=7.0)
    kinds = [(type(layer), p.scale) for layer, p in zip(res.net.layers, res.objective.penalties)]
    assert kinds == [(AffineLayer, 3.0), (SkipLayer, 7.0), (AffineLayer, 2.0), (SkipLayer, 7.0)]
    res.set_weights([4.0, 6.0])
    assert [p.scale for p in res.objective.penalties] == [4.0, 7.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="weights: expected 2"):
        res.set_weights([1.0, 1.0, 1.0])


@pytest.mark.parametrize("build, shape", [(conv_net, (1, 11, 11)), (res_net, (1, 8, 8))])
def test_deep_inversion_fits_the_data(build, shape):
    model = build()
    u_true = torch.rand((1, *shape), dtype=DT, generator=torch.Generator().manual_seed(8))
    f = model(u_true)
    u0 = torch.full_like(u_true, 0.5)
    res = invert_deep(model, f, 1e-4, "l2", input_shape=shape, u0=u0, iterations=400, rho=10.0,
                      bounds=(0, 1), tol=0.0)
    before = float(torch.linalg.vector_norm(model(u0) - f))
    after = float(torch.linalg.vector_norm(model(res.u) - f))
    assert after < 0.3 * before
    assert res.history["objective"][-1] < res.history["objective"][0]


def test_encoder_inversion_recovers_a_digit():
    enc = pretrained.encoder()  # trained on the fly (a few seconds), cached for the CLI test
    x = pretrained.digits("test")[:1]
    net = lift(enc, (1, 16, 16))
    with torch.no_grad():
        code = enc(x)
        delta = float(relative_delta(code, 0.05))
        f = bregman_noise(Identity(), code, delta, seed=1)
    res = invert(net, f, 0.05 * delta, "tv", u0=torch.full_like(x, 0.5), iterations=150, inner_u=3,
                 inner_states=3, weights=continuation(3, 10.0, 50), bounds=(0, 1))
    psnr = float(10 * torch.log10(1 / ((res.u - x) ** 2).mean()))
    start = float(10 * torch.log10(1 / ((0.5 - x) ** 2).mean()))
    assert psnr > start + 10.0, (psnr, start)


# ---- baseline ------------------------------------------------------------------------------------
def test_lifted_beats_gradient_descent_on_the_perceptron():
    model = small_perceptron()
    stage = single_layer(model)
    x = shepp_logan(16)[None].to(DT)
    z = stage.pre_activation(x)
    delta = float(relative_delta(stage(x), 0.05))
    f = bregman_noise(stage.activation, z, delta, seed=1)
    u0 = torch.full_like(x, 0.5)
    lifted = invert(model, f, delta, "tv", input_shape=(1, 16, 16), u0=u0, iterations=300, bounds=(0, 1))
    gd = invert_gradient(model, f, delta, "tv", input_shape=(1, 16, 16), method="gd", u0=u0,
                         iterations=300, lr=1e-3, bounds=(0, 1))
    objective = gd.history["objective"]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(objective))  # backtracking: monotone
    psnr = lambda u: float(10 * torch.log10(1 / ((u - x) ** 2).mean()))
    assert psnr(lifted.u) > psnr(gd.u)
    assert psnr(lifted.u) > 20.0


def test_adam_baseline_reduces_its_objective():
    model = small_perceptron(8, 48)
    f = model(torch.rand((1, 1, 8, 8), dtype=DT, generator=torch.Generator().manual_seed(9)))
    res = invert_gradient(model, f, 0.1, "tv", input_shape=(1, 8, 8), u0=torch.full((1, 1, 8, 8), 0.5, dtype=DT),
                          iterations=200, lr=1e-2)
    assert res.history["objective"][-1] < 0.1 * res.history["objective"][0]


# ---- parameter choice --------------------------------------------------------------------------
def test_discrepancy_principle_picks_the_largest_admissible_alpha():
    stage = single_layer(small_perceptron(8, 48), (1, 8, 8))
    x = shepp_logan(8)[None].to(DT)
    z = stage.pre_activation(x)
    f = bregman_noise(stage.activation, z, float(relative_delta(stage(x), 0.05)), seed=1)
    eta = float(torch.linalg.vector_norm(f - stage(x)))

    def solve(alpha, prev):
        return invert_single_layer(stage.net, f, alpha, "tv", u0=None if prev is None else prev.u,
                                   iterations=3000, tol=1e-8)

    dp = discrepancy_principle(solve, stage, f, eta, tau=1.5, alpha0=1e3, q=0.5, max_steps=30)
    assert dp.satisfied and dp.residuals[-1] <= 1.5 * eta
    assert all(r > 1.5 * eta for r in dp.residuals[:-1]) and len(dp.alphas) > 1
    assert dp.alpha == pytest.approx(1e3 * 0.5 ** (len(dp.alphas) - 1))
    assert a_priori_alpha(0.2, 3.0) == pytest.approx(0.6)


# ---- errors and checkpoints ------------------------------------------------------------------
def test_activation_without_proximal_form_is_rejected():
    model = nn.Sequential(nn.Linear(10, 5), nn.GELU())
    with pytest.raises(TypeError, match="proximal"):
        lift(model, (10,))
    with pytest.raises(TypeError, match="proximal"):
        invert(model, torch.zeros(1, 5), 0.1, "l2", input_shape=(10,))


def test_shape_mismatches_are_rejected():
    with pytest.raises(ValueError, match="in_features|expects"):
        invert(nn.Sequential(nn.Flatten(), nn.Linear(100, 5), nn.ReLU()), torch.zeros(1, 5), 0.1, "l2",
               input_shape=(1, 8, 8))
    stage = lift(small_perceptron(8, 48), (1, 8, 8))
    with pytest.raises(ValueError, match="f: the network output has shape"):
        invert_single_layer(stage, torch.zeros((1, 47), dtype=DT), 1.0)
    with pytest.raises(ValueError, match="outside the range"):
        invert_single_layer(stage, -torch.ones((1, 48), dtype=DT), 1.0)
    with pytest.raises(ValueError, match="TV needs image-shaped"):
        invert(nn.Sequential(nn.Linear(6, 4), nn.ReLU()).to(DT), torch.zeros((1, 4), dtype=DT), 1.0,
               "tv", input_shape=(6,))
    with pytest.raises(ValueError, match="u0"):
        invert_single_layer(stage, torch.zeros((1, 48), dtype=DT), 1.0, u0=torch.zeros(1, 1, 7, 7, dtype=DT))
    with pytest.raises(ValueError, match="alpha"):
        invert_single_layer(stage, torch.zeros((1, 48), dtype=DT), -1.0)


def test_checkpoint_round_trip(tmp_path):
    model = res_net().float()
    path = tmp_path / "net.pt"
    save_checkpoint(path, model, input_shape=(1, 8, 8))
    ck = load_checkpoint(path)
    loaded, shape = ck.model, tuple(ck.input_shape)
    x = torch.rand(2, 1, 8, 8)
    assert shape == (1, 8, 8) and torch.equal(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # no temporary file left behind
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(ValueError, match="not a"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_perceptron_is_seeded_standard_normal():
    a, b = pretrained.perceptron(32, 256, seed=3), pretrained.perceptron(32, 256, seed=3)
    w = a[1].weight
    assert torch.equal(w, b[1].weight) and not torch.equal(w, pretrained.perceptron(32, 256, seed=4)[1].weight)
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1.0) < 0.01
    assert float(a[1].bias.abs().max()) == 0.0


def test_single_layer_model_is_one_affine_layer_and_float32_works():
    model = pretrained.perceptron(8, 48)
    net = lift(model, (1, 8, 8))
    assert len(net.layers) == 1 and isinstance(net.layers[0], AffineLayer)
    x = shepp_logan(8)[None]
    res = invert(model, model(x), 1.0, "tv", input_shape=(1, 8, 8), iterations=50)
    assert res.u.dtype == torch.float32 and math.isfinite(res.objective)
