"""Lifted Bregman training of PNN / unrolled networks: exact block gradients, monotone BCD sweeps,
and a tiny PNN that learns (objective down, test PSNR above the noisy input's and its start)."""
import pytest
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.metrics import psnr
from lifted_inverse.networks.pnn import PNN
from lifted_inverse.networks.unrolled import UnrolledProximalNet
from lifted_inverse.operators import Blur, Radon
from lifted_inverse.training.lifted_unrolled import LiftedBatch, LiftedConfig, LiftedUnrolledSolver


def _perturbed_batch(net, y, x, A, seed=0):
    g = torch.Generator().manual_seed(seed)
    if A is None:
        b = LiftedBatch(net.prox, y, x, A)
    else:  # the net's own data term (ramp-weighted for 'ct-ramp') and initial estimate
        A_d, y_d, x0 = net.data_problem(y, A)
        b = LiftedBatch(net.prox, y_d, x, A_d, x0=x0)
    b.forward_states()
    lam = net.prox.lam
    b.u = [(0.5 * u + 0.02 * torch.randn(u.shape, generator=g, dtype=u.dtype)).clamp(-lam / 2, lam / 2)
           for u in b.u]
    b.x = [xx + 0.05 * torch.randn(xx.shape, generator=g, dtype=xx.dtype) for xx in b.x]
    return b


def _problem(kind):
    torch.manual_seed(0)
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    if kind == "pnn":
        net = PNN(features=4, layers=3, seed=1).double()
        return net, x + 0.1 * torch.randn_like(x), x, None
    if kind == "ct-ramp":
        A = Radon(12, n_angles=8, n_detectors=17).double()
        net = UnrolledProximalNet(features=4, layers=3, seed=1, fidelity="ramp").double()
        return net, A(x) + 0.01 * torch.randn(A(x).shape, dtype=x.dtype), x, A
    A = Blur((1, 12, 12), "gaussian").double()
    net = UnrolledProximalNet(features=4, layers=3, seed=1).double()
    return net, A(x) + 0.01 * torch.randn_like(x), x, A


def _energy_with(sol, b, which, k, value):
    store = b.u if which == "u" else b.x
    saved = store[k]
    store[k] = value
    e = sum(sol.layer_term(b, j) for j in range(sol.prox.n_layers))
    store[k] = saved
    return e


@pytest.mark.parametrize("kind", ["pnn", "blur", "ct-ramp"])
def test_state_gradients_match_autograd(kind, monkeypatch):
    net, y, x, A = _problem(kind)
    sol = LiftedUnrolledSolver(net, LiftedConfig(solver="bcd"))
    b = _perturbed_batch(net, y, x, A)
    B = x.shape[0]
    for k in range(net.n_layers):
        u = b.u[k].clone().requires_grad_(True)  # interior of the box: E = F(u) + S(u), ∇F = u
        (g_auto,) = torch.autograd.grad(_energy_with(sol, b, "u", k, u), u)
        g_auto = g_auto * B - u.detach()
        # one block step with a tiny step recovers the hand gradient: u⁺ ≈ (u − μ g)/(1 + μ)
        before = b.u[k].clone()
        monkeypatch.setattr(sol, "_coef", sol._coef)
        mu_lip = {}
        orig = sol.act.prox_F

        def spy(v, mu, _orig=orig):
            mu_lip["mu"] = mu
            return v / (1 + mu)  # no clipping: the spy only reads the gradient
        monkeypatch.setattr(sol.act, "prox_F", spy)
        sol._update_u(b, k)
        mu = mu_lip["mu"]
        g_hand = (before - b.u[k] * (1 + mu)) / mu
        b.u[k] = before
        monkeypatch.setattr(sol.act, "prox_F", orig)
        assert torch.allclose(g_hand, g_auto, rtol=1e-7, atol=1e-9), f"u-block {k}"
    for k in range(len(b.x)):
        xv = b.x[k].clone().requires_grad_(True)
        (g_auto,) = torch.autograd.grad(_energy_with(sol, b, "x", k, xv), xv)
        before = b.x[k].clone()
        sol._update_x(b, k)
        j = k + 1
        lip = sol.config.rho + (float(net.prox.step(j)) * 1.05 * float(net.prox.norms[j])) ** 2 + sol._coef(j)
        g_hand = (before - b.x[k]) * lip
        b.x[k] = before
        assert torch.allclose(g_hand, g_auto * B, rtol=1e-7, atol=1e-9), f"x-block {k}"


@pytest.mark.parametrize("kind", ["pnn", "blur", "ct-ramp", "pnn-tied"])
def test_weight_gradients_match_autograd(kind):
    """The closed-form ``(T_k, ∂T_k/∂L_k)`` used by the weight blocks equals the layer term and
    autograd through it (float64), for every layer, tied weights included."""
    net, y, x, A = _problem(kind.split("-")[0] if kind == "pnn-tied" else kind)
    if kind == "pnn-tied":
        net = PNN(features=4, layers=3, seed=1, tied=True).double()
    sol = LiftedUnrolledSolver(net, LiftedConfig(solver="adam"))
    b = _perturbed_batch(net, y, x, A)
    prox = net.prox
    for k in range(net.n_layers):
        w = prox.weight(k).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            ref = sol.layer_term(b, k, weight=w)
            (g_ref,) = torch.autograd.grad(ref, w)
        value, g = sol.layer_value_and_grad(b, k)
        ref = float(ref.detach())
        assert abs(float(value) - ref) <= 1e-12 * max(1.0, abs(ref)), f"value, layer {k}"
        assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-12), f"gradient, layer {k}"
        assert float(g.abs().max()) > 1e-6      # perturbed states: a gradient worth comparing


@pytest.mark.parametrize("kind, state_lr", [("pnn", 1.0), ("blur", 1.0), ("ct-ramp", 1.0), ("blur", 0.4), ("pnn", 1.8)])
def test_bcd_sweeps_never_increase_the_lifted_objective(kind, state_lr):
    net, y, x, A = _problem(kind)
    sol = LiftedUnrolledSolver(net, LiftedConfig(solver="bcd", inner_sweeps=1, lr=1e-2, state_lr=state_lr))
    energies = [sol.step(y, x, A)]
    for _ in range(6):
        b = sol.batch
        for k in reversed(range(net.n_layers)):  # every single block step is a descent step
            e0 = sol.energy(b)
            sol._update_u(b, k)
            assert sol.energy(b) <= e0 + 1e-12
        e0 = sol.energy(b)
        sol.weight_step(b)
        assert sol.energy(b) <= e0 + 1e-12
        energies.append(sol.step(y, x, A))
    assert all(e1 <= e0 + 1e-12 for e0, e1 in zip(energies, energies[1:]))
    assert energies[-1] < 0.9 * energies[0]


def test_tiny_pnn_learns_by_lifted_training():
    torch.manual_seed(0)
    brick = builtin_image("brick", 96)
    g = torch.Generator().manual_seed(0)
    tops = torch.randint(0, 96 - 24, (48, 2), generator=g)
    x = torch.stack([brick[:, a:a + 24, c:c + 24] for a, c in tops.tolist()])
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    test_x = builtin_image("gravel", 64)[None]  # a different image, never trained on
    test_y = test_x + 0.1 * torch.randn(test_x.shape, generator=g)
    net = PNN(features=8, layers=4, seed=0)
    sol = LiftedUnrolledSolver(net, LiftedConfig(solver="adam", lr=3e-3, inner_sweeps=1))
    with torch.no_grad():
        start = float(psnr(net(test_y), test_x, 1.0, reduction="mean"))
    noisy = float(psnr(test_y, test_x, 1.0, reduction="mean"))
    first = [sol.step(y[i:i + 16], x[i:i + 16]) for i in range(0, 48, 16)]
    for _ in range(5):
        last = [sol.step(y[i:i + 16], x[i:i + 16]) for i in range(0, 48, 16)]
    with torch.no_grad():
        end = float(psnr(net(test_y), test_x, 1.0, reduction="mean"))
    assert sum(last) < 0.8 * sum(first)
    assert end > noisy + 2.0 and end > start + 0.3


def test_bad_input():
    net = PNN(features=2, layers=2)
    with pytest.raises(ValueError, match="solver"):
        LiftedUnrolledSolver(net, LiftedConfig(solver="sgd"))
    for bad in (0.0, 2.0):
        with pytest.raises(ValueError, match="state_lr"):
            LiftedUnrolledSolver(net, LiftedConfig(state_lr=bad))
    with pytest.raises(ValueError, match="y: expected the target's shape"):
        LiftedBatch(net.prox, torch.rand(2, 1, 8, 8), torch.rand(2, 1, 9, 9))


def test_cached_data_steps_follow_the_states():
    """``LiftedBatch.v`` caches ``v_{k+1}`` per stored ``x_k``; replacing a state invalidates it."""
    from lifted_inverse.networks.unrolled import gradient_step

    net, y, x, A = _problem("blur")
    b = LiftedBatch(net.prox, y, x, A)
    b.forward_states()
    assert b.v(1) is b.v(1)  # cached
    b.x[0] = b.x[0] + 0.1
    assert torch.equal(b.v(1), gradient_step(A, b.x[0], y, b.gamma))
    assert torch.equal(b.v(0), gradient_step(A, b.x0, y, b.gamma))


def test_cached_pre_activations_follow_weights_and_steps():
    """``LiftedBatch.p`` keeps ``p_k`` while its inputs, ``L_k`` and ``τ`` are unchanged; an in-place
    weight update or a refreshed step recomputes it."""
    net, y, x, A = _problem("pnn")
    b = LiftedBatch(net.prox, y, x, A)
    b.forward_states()
    u1, v1 = b.u[0], b.v(1)
    p = b.p(1, u1, v1)
    assert b.p(1, u1, v1) is p
    with torch.no_grad():
        net.prox.tau.mul_(0.5)                       # a new step, same weights
    p_tau = b.p(1, u1, v1)
    assert p_tau is not p and torch.allclose(p_tau, net.prox.pre_activation(1, u1, v1))
    with torch.no_grad():
        net.prox.weight(1).mul_(1.1)                 # a weight step, same τ
    p_w = b.p(1, u1, v1)
    assert p_w is not p_tau and torch.allclose(p_w, net.prox.pre_activation(1, u1, v1))
