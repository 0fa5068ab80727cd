"""Lifted Bregman training of PNN / unrolled networks on the generic engine (``lift`` +
``LiftedObjective`` + ``LiftedSolver``): exact block gradients, monotone BCD sweeps, caches that
follow states and weights, resume, and a tiny PNN that learns (objective down, test PSNR above the
noisy input's and its start)."""
import itertools

import pytest
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.lifted import LiftedObjective, LiftedSolver, StateStore, lift
from lifted_inverse.lifted.unrolled import DataStep, DualLayer, ImageLayer
from lifted_inverse.metrics import psnr
from lifted_inverse.networks.pnn import PNN
from lifted_inverse.networks.unrolled import UnrolledProximalNet, gradient_step
from lifted_inverse.operators import Blur, Radon

# the imaging tasks' solver options (training.imaging.LIFTED_DEFAULTS)
IMAGING = {"state_order": "backward", "inner_sweeps": 1, "prox_weight": 0.0, "power_iterations": 2}


def _problem(kind):
    torch.manual_seed(0)
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    if kind in ("pnn", "pnn-tied"):
        net = PNN(features=4, layers=3, seed=1, tied=kind == "pnn-tied").double()
        return net, x + 0.1 * torch.randn_like(x), x, None
    if kind == "ct-ramp":
        A = Radon(12, n_angles=8, n_detectors=17).double()
        net = UnrolledProximalNet(features=4, layers=3, seed=1, fidelity="ramp").double()
        return net, A(x) + 0.01 * torch.randn(A(x).shape, dtype=x.dtype), x, A
    A = Blur((1, 12, 12), "gaussian").double()
    net = UnrolledProximalNet(features=4, layers=3, seed=1, tied=kind == "blur-tied").double()
    return net, A(x) + 0.01 * torch.randn_like(x), x, A


def _solver(net, A, solver="bcd", rho=1.0, **kw):
    lifted = lift(net, input_shape=(1, 12, 12) if A is None else None, operator=A)
    return LiftedSolver(LiftedObjective(lifted, "bregman", rho=rho), solver, **{**IMAGING, **kw})


def _perturbed_states(sol, y, x, seed=0):
    """Forward-pass states moved off the forward pass (every penalty and gradient non-zero);
    dual states stay inside the clipping box, where ``F = ½‖·‖²`` is differentiable."""
    g = torch.Generator().manual_seed(seed)
    net = sol.net
    fwd = net.forward_states(y)
    states = sol.batch_states(y, x, {s: fwd[s] for s in net.free_states})
    for s in net.free_states:
        v = states[s]
        if isinstance(net.producer[s], DualLayer):
            lam = net.producer[s].activation.lam
            states[s] = (0.5 * v + 0.02 * torch.randn(v.shape, generator=g, dtype=v.dtype)).clamp(-lam / 2, lam / 2)
        else:
            states[s] = v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype)
    return states


def _energy(sol, states):
    """E (batch mean) as a differentiable function of the states and weights."""
    return sum(sol.objective.layer_value(layer, states) for layer in sol.net.layers).mean()


@pytest.mark.parametrize("kind", ["pnn", "blur", "ct-ramp"])
@pytest.mark.parametrize("rho", [1.0, 3.0])
def test_state_gradients_match_autograd(kind, rho):
    """Every state block's gradient (smooth part from ``state_gradient`` plus ``s·∇F`` of the
    proximal part ``s·F``, ``F = ½‖·‖²`` in the interior) equals autograd of E (float64), for
    the dual states and the image states."""
    net, y, x, A = _problem(kind)
    sol = _solver(net, A, rho=rho)
    states = _perturbed_states(sol, y, x)
    B = x.shape[0]
    kinds = set()
    for s in sol.net.free_states:
        v = states[s].clone().requires_grad_(True)
        trial = list(states)
        trial[s] = v
        with torch.enable_grad():
            (g_auto,) = torch.autograd.grad(_energy(sol, trial), v)
        g, lip = sol.state_gradient(states, s)
        producer = sol.net.producer[s]
        scale = sol.objective.penalties[producer.index].scale
        assert torch.allclose(g + scale * states[s], g_auto * B, rtol=1e-7, atol=1e-9), f"state {s}"
        # the step 1/L of the block: L bounds how fast the smooth gradient moves (random directions)
        gen = torch.Generator().manual_seed(s)
        for _ in range(3):
            d = torch.randn(states[s].shape, generator=gen, dtype=states[s].dtype)
            moved = list(states)
            moved[s] = states[s] + 1e-3 * d
            g2, lip2 = sol.state_gradient(moved, s)
            assert lip2 == lip
            assert float((g2 - g).norm()) <= lip * 1e-3 * float(d.norm()), f"state {s}: L too small"
        kinds.add(type(producer))
    assert kinds == ({DualLayer} if A is None else {DualLayer, ImageLayer})


@pytest.mark.parametrize("kind", ["pnn", "blur", "ct-ramp", "pnn-tied", "blur-tied"])
def test_weight_gradients_match_autograd(kind):
    """The closed-form W-gradients, summed over the layers that share a weight (an unrolled
    ``L_k`` enters its dual and its image layer; tied weights every layer), and the layer values
    equal autograd through E (float64)."""
    net, y, x, A = _problem(kind)
    sol = _solver(net, A, solver="adam")
    states = _perturbed_states(sol, y, x)
    grads, _, value = sol._gradients(states, {})
    summed = {}
    for ps, gs in zip(sol.params, grads):
        for p, g in zip(ps, gs):
            summed[id(p)] = summed.get(id(p), 0) + g
    weights = list(net.prox.weights)
    assert len(sol.flat_params) == len(weights) and len(summed) == len(weights)
    assert len(sol.groups) == len(weights)          # one W-block per distinct L
    with torch.enable_grad():
        ref = _energy(sol, states)
        g_ref = torch.autograd.grad(ref, weights)
    ref = ref.detach()
    assert abs(value - float(ref)) <= 1e-12 * max(1.0, abs(float(ref)))
    for w, gr in zip(weights, g_ref):
        assert torch.allclose(summed[id(w)], gr, rtol=1e-9, atol=1e-12)
        assert float(gr.abs().max()) > 1e-6      # perturbed states: a gradient worth comparing


@pytest.mark.parametrize("kind, state_lr, rho", [("pnn", 1.0, 1.0), ("blur", 1.0, 1.0), ("ct-ramp", 1.0, 3.0),
                                                  ("blur", 0.4, 1.0), ("pnn", 1.8, 1.0), ("blur", 1.9, 1.0)])
def test_bcd_sweeps_never_increase_the_lifted_objective(kind, state_lr, rho):
    """Full-batch BCD: every single state block step and every backtracked weight step (at the
    τ_k its gradient was taken at; τ_k refreshed after it) is a descent step, and the reported
    objectives never increase."""
    net, y, x, A = _problem(kind)
    sol = _solver(net, A, "bcd", rho=rho, lr=1e-2, state_lr=state_lr, state_init="store")
    store = StateStore.from_forward(sol.objective, y)
    energies = [sol.step(y, x, store)]
    for _ in range(6):
        states = sol.batch_states(y, x, store.gather(None))
        for s in reversed(sol.net.free_states):
            e0 = sol.objective.value(states)
            sol.update_state(states, s)
            assert sol.objective.value(states) <= e0 + 1e-12
        e0 = sol.objective.value(states)
        tau0 = net.prox.tau.clone()
        sol.weight_step(states)
        tau1 = net.prox.tau.clone()
        net.prox.tau.copy_(tau0)      # the backtracking test holds τ_k fixed (lifted/solvers.py)
        assert sol.objective.value(states) <= e0 + 1e-12
        net.prox.tau.copy_(tau1)
        assert not torch.equal(net.prox.tau, tau0)   # τ_k follow the weights
        store.scatter(None, {s: states[s] for s in sol.net.free_states})
        energies.append(sol.step(y, x, store))
    assert all(e1 <= e0 + 1e-12 for e0, e1 in itertools.pairwise(energies))
    assert energies[-1] < 0.9 * energies[0]


def test_rejected_trial_steps_leave_weights_and_steps_as_they_were(monkeypatch):
    """A block whose trial steps all fail keeps its weights, τ, norms and probe, and its trial step."""
    net, y, x, A = _problem("blur")
    sol = _solver(net, A, "bcd", lr=1e-2, max_backtracks=3, state_init="store")
    store = StateStore.from_forward(sol.objective, y)
    states = sol.batch_states(y, x, store.gather(None))
    sol.update_states(states)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.setattr(sol, "_block_value", lambda *a: float("inf"))
    sol.weight_step(states)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert sol._trial == [1e-2] * len(sol.groups)


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
    sol = LiftedSolver(LiftedObjective(lift(net, input_shape=(1, 24, 24)), "bregman"), "adam", lr=3e-3,
                       state_init="forward", **IMAGING)
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


@pytest.mark.parametrize("solver", ["adam", "isgm", "bcd"])
def test_resume_continues_exactly(solver):
    """Solver state (Adam moments, backtracking trial steps) plus the network's state dict
    (weights, τ, norms, probes) resume a run step for step."""
    def fresh():
        net, y, x, A = _problem("blur")
        sol = _solver(net, A, solver, lr=1e-2 if solver != "adam" else 3e-3,
                      state_init="store" if solver == "bcd" else "forward")
        return net, sol, y, x

    def run(net, sol, y, x, steps, store=None):
        if solver == "bcd" and store is None:
            store = StateStore.from_forward(sol.objective, y)
        return [sol.step(y, x, store) for _ in range(steps)], store

    net, sol, y, x = fresh()
    straight, _ = run(net, sol, y, x, 4)
    net2, sol2, y, x = fresh()
    _, store = run(net2, sol2, y, x, 2)
    saved_net, saved_sol = net2.state_dict(), sol2.state_dict()
    net3, sol3, y, x = fresh()
    net3.load_state_dict(saved_net)
    sol3.load_state_dict(saved_sol)
    resumed, _ = run(net3, sol3, y, x, 2, store)
    assert resumed == pytest.approx(straight[2:], rel=1e-12)
    for a, b in zip(net.state_dict().values(), net3.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_bad_input():
    net = PNN(features=2, layers=2)
    lifted = lift(net, input_shape=(1, 8, 8))
    obj = LiftedObjective(lifted, "bregman")
    with pytest.raises(ValueError, match="solver"):
        LiftedSolver(obj, "sgd")
    for bad in (0.0, 2.0):
        with pytest.raises(ValueError, match="state_lr"):
            LiftedSolver(obj, "adam", state_lr=bad)
    with pytest.raises(ValueError, match="prox_weight"):
        LiftedSolver(obj, "isgm", prox_weight=-1.0)
    for solver in ("nesterov", "heavyball"):   # no W-block Gram: no Lipschitz step to extrapolate
        with pytest.raises(ValueError, match="Lipschitz"):
            LiftedSolver(obj, solver)
    sol = LiftedSolver(obj, "adam", state_init="forward")
    with pytest.raises(ValueError, match="x: expected shape"):
        sol.step(torch.rand(2, 1, 9, 9), torch.rand(2, 1, 9, 9))
    with pytest.raises(ValueError, match="target: expected shape"):
        sol.step(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 9, 9))
    with pytest.raises(ValueError, match="input_shape"):
        lift(net)
    with pytest.raises(TypeError, match="operator"):
        lift(net, input_shape=(1, 8, 8), operator=Blur((1, 16, 16), "gaussian"))
    with pytest.raises(TypeError, match="operator"):
        lift(UnrolledProximalNet(features=2, layers=2))
    with pytest.raises(TypeError, match="linear map"):
        DataStep(lambda v: v, 1.0)


def test_cached_data_steps_follow_the_states():
    """``DataStep`` keeps ``v = x − γA*(Ax − y)`` for the last ``(x, y)``; a new state recomputes."""
    net, y, x, A = _problem("blur")
    sol = _solver(net, A)
    layers = sol.net.layers
    step = layers[2].data_step      # v_2, read by the second dual and image layers (from x_1)
    assert layers[3].data_step is step and layers[0].data_step is not step
    assert all(layer.data_step.A is A and layer.data_step.gamma == step.gamma for layer in layers)
    x0 = torch.rand_like(x)
    v = step(x0, y)
    assert step(x0, y) is v
    x1 = x0 + 0.1
    assert torch.equal(step(x1, y), gradient_step(A, x1, y, step.gamma))
    assert torch.equal(step(x0, y), gradient_step(A, x0, y, step.gamma))
    with torch.no_grad():
        x0.mul_(0.5)                                 # written in place: recomputed
    assert torch.equal(step(x0, y), gradient_step(A, x0, y, step.gamma))


@pytest.mark.parametrize("kind", ["pnn", "blur"])
def test_cached_pre_activations_follow_states_and_weights(kind):
    """The pre-activations a sweep keeps are those of the current states (a state update drops
    those that read it), and a weight step (which moves τ too) drops them all."""
    net, y, x, A = _problem(kind)
    sol = _solver(net, A, "adam", lr=1e-2, state_init="forward")
    cache = {}
    fwd = sol.net.forward_states(y, pre_activations=cache)
    states = sol.batch_states(y, x, {s: fwd[s] for s in sol.net.free_states})
    sol.update_states(states, cache)
    assert cache
    for i, z in cache.items():
        layer = sol.net.layers[i]
        assert torch.equal(z, layer.pre_activation([states[s] for s in layer.inputs]))
    tau0 = net.prox.tau.clone()
    sol.weight_step(states, cache)
    assert not cache and not torch.equal(net.prox.tau, tau0)


def test_lifted_forward_pass_is_the_networks():
    """The lifted network's forward states end in the model's output (PNN and unrolled, CT with
    the ramp-weighted data term), and the weights are the model's own tensors."""
    for kind in ("pnn", "blur", "ct-ramp"):
        net, y, _, A = _problem(kind)
        lifted = lift(net, input_shape=tuple(y.shape[1:]), operator=A)
        with torch.no_grad():
            out = net(y) if A is None else net(y, A)
        assert torch.allclose(lifted.forward_states(y)[-1], out, rtol=1e-12, atol=1e-12)
        ids = {id(p) for p in lifted.parameters()}
        assert ids == {id(w) for w in net.prox.weights}
    # an unrolled net's fixed inputs (y_d, x_0) are derived once per measurement tensor
    fixed = lifted.prepare_inputs(y)
    assert len(fixed) == 2 and all(a is b for a, b in zip(fixed, lifted.prepare_inputs(y)))
    with torch.no_grad():
        y.mul_(2.0)
    again = lifted.prepare_inputs(y)
    assert torch.allclose(again[0], 2 * fixed[0]) and torch.allclose(again[1], 2 * fixed[1])
