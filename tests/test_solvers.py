"""Lifted solvers: monotone BCD sweeps, training with every penalty/solver, reduce hook, ResNet."""
import itertools
import math

import pytest
import torch

from lifted_inverse.lifted import Softmax, lift
from lifted_inverse.lifted.objective import LiftedObjective, WeightRegularizer
from lifted_inverse.lifted.solvers import LiftedSolver, StateStore
from lifted_inverse.networks import mlp
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n=120, d=6, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = 2.5 * torch.randn(classes, d, generator=g, dtype=dtype)
    labels = torch.arange(n) % classes
    x = centres[labels] + torch.randn(n, d, generator=g, dtype=dtype)
    return x, labels, torch.nn.functional.one_hot(labels, classes).to(dtype)


def _setup(method, solver="bcd", widths=(6, 12, 12, 3), **kw):
    torch.manual_seed(0)
    model = mlp(widths).double()
    net = lift(model, output_activation=Softmax())
    obj = LiftedObjective(net, method)
    return model, net, obj, LiftedSolver(obj, solver, **kw)


@pytest.mark.parametrize("method,order", [("bregman", "bottom-up"), ("fenchel", "bottom-up"),
                                          ("bregman", "top-down"), ("bregman", "backward")])
def test_plain_bcd_blocks_never_increase_objective(method, order):
    x, _, t = _blobs()
    _model, _net, obj, solver = _setup(method, state_order=order)
    store = StateStore.from_forward(obj, x)
    # perturb the states so that the state blocks have work to do
    g = torch.Generator().manual_seed(5)
    for s, v in store.states.items():
        store.states[s] = (v + 0.5 * torch.rand(v.shape, generator=g, dtype=v.dtype))
    states = solver.batch_states(x, t, store.gather(None))
    values = [obj.value(states)]
    for _ in range(25):
        cache = {}
        solver.update_states(states, cache)
        values.append(obj.value(states))
        reported = solver.weight_step(states, cache)
        assert reported == pytest.approx(values[-1], rel=1e-12)  # objective at (Θ^k, X^{k+1})
        values.append(obj.value(states))
    diffs = [b - a for a, b in zip(values[:-1], values[1:])]
    assert max(diffs) <= 1e-12 * values[0], diffs
    assert values[-1] < 0.7 * values[0]


@pytest.mark.parametrize("order", ["bottom-up", "top-down"])
def test_sweeps_from_the_forward_pass_descend_and_keep_no_store(order):
    """``state_init='forward'``: each mini-batch starts at the forward pass (hidden penalties 0),
    its state block and W-block never increase the batch objective; no store is read."""
    x, _, t = _blobs()
    _model, net, obj, solver = _setup("bregman", state_init="forward", state_order=order)
    g = torch.Generator().manual_seed(2)
    for _ in range(10):
        ids = torch.randperm(len(x), generator=g)[:40]
        fwd = net.forward_states(x[ids])
        states = solver.batch_states(x[ids], t[ids], {s: fwd[s] for s in net.free_states})
        start = obj.value(states)
        with torch.no_grad():
            assert all(float(obj.layer_value(layer, states).abs().max()) < 1e-12 for layer in net.layers[:-1])
        cache = {}
        solver.update_states(states, cache)
        after_states = obj.value(states)
        solver.weight_step(states, cache)
        assert after_states <= start + 1e-12 and obj.value(states) <= after_states + 1e-12
    # step() does the same without a store, and reports the objective at the W-step
    ids = torch.arange(40)
    fwd = net.forward_states(x[ids])
    states = solver.batch_states(x[ids], t[ids], {s: fwd[s] for s in net.free_states})
    solver.update_states(states, {})
    expected = obj.value(states)
    assert solver.step(x[ids], t[ids], None, ids) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("solver", ["bcd", "adam", "isgm"])
def test_a_weight_shared_by_two_layers_is_one_block(solver):
    """A linear map used twice (``W`` in layers 1 and 2) is one W-block: its gradient is the sum of
    both layers' (autograd of E), Adam sees it once, full-batch BCD still descends."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(6, 6).double()
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.ReLU(),
                                torch.nn.Linear(6, 3).double())
    net = lift(model, output_activation=Softmax())
    obj = LiftedObjective(net, "bregman")
    sol = LiftedSolver(obj, solver, lr=1e-2 if solver == "adam" else 1.0)
    assert sol.grouped and not sol.backtracking
    assert len(sol.flat_params) == 4 and [g[0] for g in sol.groups] == [[0, 1], [2]]
    x, _, t = _blobs(60)
    store = StateStore.from_forward(obj, x)
    g = torch.Generator().manual_seed(1)
    states = sol.batch_states(x, t, {s: v + 0.3 * torch.rand(v.shape, generator=g, dtype=v.dtype)
                                     for s, v in store.states.items()})
    grads, _, _ = sol._gradients(states, {})
    with torch.enable_grad():
        e = sum(obj.layer_value(layer, states) for layer in net.layers).mean()
        ref = torch.autograd.grad(e, [shared.weight, shared.bias])
    assert torch.allclose(grads[0][0] + grads[1][0], ref[0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(grads[0][1] + grads[1][1], ref[1], rtol=1e-10, atol=1e-12)
    if solver != "bcd":
        values = [sol.step(x, t, store) for _ in range(20)]
        assert values[-1] < values[0]
        return
    values = []
    for _ in range(15):
        sol.update_states(states)
        values.append(obj.value(states))
        sol.weight_step(states)
        values.append(obj.value(states))
    assert all(b <= a + 1e-12 * values[0] for a, b in itertools.pairwise(values))
    assert values[-1] < values[0]


def test_fenchel_objective_is_twice_hidden_bregman():
    x, _, t = _blobs(30)
    _, net, bre, _ = _setup("bregman")
    fen = LiftedObjective(net, "fenchel")
    states = net.forward_states(x)
    states[1] = states[1] + 0.3
    states[-1] = t
    for layer in net.layers[:-1]:
        assert torch.allclose(fen.layer_value(layer, states), 2 * bre.layer_value(layer, states))
    last = net.layers[-1]
    assert torch.allclose(fen.layer_value(last, states), bre.layer_value(last, states))


@pytest.mark.parametrize("method", ["bregman", "fenchel", "mac"])
def test_every_penalty_trains(method):
    x, labels, t = _blobs(150, seed=1)
    model, _net, obj, solver = _setup(method)
    store = StateStore.from_forward(obj, x)
    gen = torch.Generator().manual_seed(0)
    first = last = None
    for epoch in range(15):
        obj.set_epoch(epoch)
        perm = torch.randperm(150, generator=gen)
        vals = [solver.step(x[ids], t[ids], store, ids) for ids in perm.split(30)]
        first = first if first is not None else sum(vals) / len(vals)
        last = sum(vals) / len(vals)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == labels).double().mean())
    assert last < first
    assert acc > 0.8  # chance is 1/3


@pytest.mark.parametrize("solver", ["nesterov", "heavyball", "adam", "isgm"])
def test_accelerated_and_stochastic_solvers_train(solver):
    x, labels, t = _blobs(150, seed=2)
    model, _net, obj, sol = _setup("bregman", solver, lr=1e-2 if solver == "adam" else None)
    store = None if solver == "isgm" else StateStore.from_forward(obj, x)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        loss0 = float(torch.nn.functional.cross_entropy(model(x), labels))
    for _ in range(10):
        for ids in torch.randperm(150, generator=gen).split(30):
            sol.step(x[ids], t[ids], store, ids)
    with torch.no_grad():
        out = model(x)
        loss = float(torch.nn.functional.cross_entropy(out, labels))
        acc = float((out.argmax(1) == labels).double().mean())
    assert math.isfinite(loss) and loss < 0.5 * loss0
    assert acc > 0.8


def test_reduce_fn_is_one_call_per_weight_step_and_normalises():
    """A reduce_fn that doubles every tensor (two identical ranks) must not change the result."""
    x, _, t = _blobs(40)
    calls = []

    def doubled(tensors):
        calls.append(len(tensors))
        return [2 * v for v in tensors]

    results = []
    for fn in (None, doubled):
        model, _net, obj, sol = _setup("bregman", reduce_fn=fn)
        store = StateStore.from_forward(obj, x)
        for _ in range(3):
            sol.step(x, t, store, None)
        results.append([p.clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-12)
    # per sweep: one call for gradients (+stats) and one per power iteration
    n_params = len(list(model.parameters()))
    assert calls[0] == n_params + 1


def test_state_store_by_sample_ids():
    store = StateStore({1: torch.arange(10.0)[:, None]})
    ids = torch.tensor([7, 2])
    got = store.gather(ids)
    assert got[1].flatten().tolist() == [7.0, 2.0]
    two = StateStore({1: torch.zeros(10, 1), 2: torch.ones(10, 1)})
    assert list(two.gather(ids, only=[2])) == [2] and list(two.gather(None, only=[1])) == [1]
    store.scatter(ids, {1: torch.tensor([[-1.0], [-2.0]])})
    assert store.states[1][7, 0] == -1.0 and store.states[1][2, 0] == -2.0


def test_weight_regularisers_prox():
    w = torch.tensor([[1.0, -0.05, 0.3]])
    WeightRegularizer("l1", 0.1).prox([w], [1.0])
    assert torch.allclose(w, torch.tensor([[0.9, 0.0, 0.2]]))
    WeightRegularizer("l2", 1.0).prox([w], [1.0])
    assert torch.allclose(w, torch.tensor([[0.45, 0.0, 0.1]]))
    with pytest.raises(ValueError, match="kind"):
        WeightRegularizer("l0")


def test_bad_solver_arguments():
    _, _net, obj, _ = _setup("bregman")
    with pytest.raises(ValueError, match="solver: unknown"):
        LiftedSolver(obj, "lbfgs")
    with pytest.raises(ValueError, match="lr"):
        LiftedSolver(obj, "bcd", lr=-1.0)
    with pytest.raises(ValueError, match="state_init: expected one of"):
        LiftedSolver(obj, "bcd", state_init="zeros")
    with pytest.raises(ValueError, match="state_order: expected one of"):
        LiftedSolver(obj, "bcd", state_order="random")
    with pytest.raises(ValueError, match="store: .*state_init='store'"):
        LiftedSolver(obj, "bcd").step(*_blobs(10)[::2], None)
    sol = LiftedSolver(obj, "bcd")
    x, _, t = _blobs(10)
    store = StateStore.from_forward(obj, x)
    with pytest.raises(ValueError, match="target: expected shape"):
        sol.step(x, t[:, :2], store)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x: contains NaN"):
        sol.step(bad, t, store)


def test_resnet_with_8_blocks_trains_stably_with_lifted_bregman():
    task = make_task("digits-resnet", TaskConfig(seed=0, extra={"width": 48, "blocks": 8}))
    assert len(task.model) == 8 + 3
    res = train(task, TrainConfig(method="bregman", solver="adam", epochs=6, batch_size=64, lr=5e-3))
    objs = res["train_objective"]
    assert all(math.isfinite(v) for v in objs)
    assert objs[-1] < 0.5 * objs[0]
    assert res["test_accuracy"] >= 0.85
