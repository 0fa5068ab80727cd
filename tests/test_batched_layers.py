"""Layer-parallel sweeps (BatchedLiftedSolver) equal the per-layer loop (LiftedSolver), float64."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lifted_inverse.lifted import ResidualBlock, Softmax, SoftThreshold, lift
from lifted_inverse.lifted.batched import BatchedLiftedSolver, batchable, uniform_chain
from lifted_inverse.lifted.objective import LiftedObjective, WeightRegularizer
from lifted_inverse.lifted.solvers import SOLVERS, LiftedSolver, StateStore
from lifted_inverse.networks import mlp

TOL = 1e-10
N, SWEEPS, BATCH = 40, 4, 16


def _relu_mlp():      # head 20->32, body of 3 (odd: tail reads a colour-B state), tail 32->5
    return mlp((20, 32, 32, 32, 32, 5)), Softmax(), "bregman"


def _tanh_mlp():      # body of 4 (even: tail reads a colour-A state)
    return mlp((20, 24, 24, 24, 24, 24, 5), activation="tanh"), Softmax(), "fenchel"


def _mac_nobias():    # body of 2, no biases, MAC (smooth y-part, σ' in ∇_z)
    return mlp((20, 16, 16, 16, 6), activation="leaky_relu", bias=False), None, "mac"


def _short_mlp():    # body of 1 (the digits-mlp shape): colour B is one state read by the tail
    return mlp((20, 32, 32, 5)), Softmax(), "bregman"


def _mixed_mlp():     # tanh and soft-threshold layers alternate: not a uniform chain
    return nn.Sequential(nn.Linear(20, 24), nn.Tanh(), nn.Linear(24, 24), SoftThreshold(0.1),
                         nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(),
                         nn.Linear(24, 5)), Softmax(), "fenchel"


NETWORKS = {"relu-bregman": _relu_mlp, "tanh-fenchel": _tanh_mlp, "leaky-mac-nobias": _mac_nobias,
            "short-bregman": _short_mlp, "mixed-fenchel": _mixed_mlp}


def _run(cls, make, solver, regularizer=None, **solver_options):
    torch.manual_seed(0)
    model, out_act, method = make()
    model = model.double()
    net = lift(model, output_activation=out_act)
    obj = LiftedObjective(net, method, lam=0.7, regularizer=regularizer)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 20, generator=gen, dtype=torch.float64)
    n_out = net.state_shapes[-1][0]
    t = torch.nn.functional.one_hot(torch.randint(0, n_out, (N,), generator=gen), n_out).double()
    store = StateStore.from_forward(obj, x)
    # move the states off the forward pass so every W-gradient is O(1), not rounding noise
    # (Adam divides by |g|: noise-level gradients would turn rounding into O(lr) steps)
    store.states = {s: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
                    for s, v in store.states.items()}
    extra = {"cpu_min_body": 1} if cls is BatchedLiftedSolver else {}   # batched kernels for every case
    solv = cls(obj, solver, lr=1e-2 if solver == "adam" else None, state_steps=2, **extra, **solver_options)
    values = []
    for _ in range(SWEEPS):
        ids = torch.randperm(N, generator=gen)[:BATCH]
        values.append(solv.step(x[ids], t[ids], store, ids))
    return [p.detach().clone() for p in model.parameters()], store.states, values, solv


CASES = [("relu-bregman", s) for s in SOLVERS] + [(n, s) for n in ("tanh-fenchel", "leaky-mac-nobias")
                                                  for s in ("bcd", "adam")] + [("short-bregman", "bcd"), ("short-bregman", "isgm"), ("mixed-fenchel", "bcd")]


@pytest.mark.parametrize("network, solver", CASES)
def test_batched_equals_per_layer_loop(network, solver):
    make = NETWORKS[network]
    p1, s1, v1, ref = _run(LiftedSolver, make, solver)
    p2, s2, v2, bat = _run(BatchedLiftedSolver, make, solver)
    assert bat.batched == (network != "mixed-fenchel")
    assert max(float((a - b).abs().max()) for a, b in zip(p1, p2)) < TOL
    assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) < TOL
    assert max(abs(a - b) for a, b in zip(v1, v2)) < TOL
    # the sweeps did something
    torch.manual_seed(0)
    fresh = [p.detach().double() for p in make()[0].parameters()]
    assert max(float((a - b).abs().max()) for a, b in zip(fresh, p2)) > 1e-4
    if solver != "adam":   # Lipschitz power-iteration vectors agree too
        for a, b in zip(ref._wvec, bat._wvec):
            assert max(float((u - w).abs().max()) for u, w in zip(a, b)) < 1e-8


@pytest.mark.parametrize("network", ["relu-bregman", "tanh-fenchel", "short-bregman"])
@pytest.mark.parametrize("solver", ["bcd", "adam"])
@pytest.mark.parametrize("state_init", ["store", "forward"])
def test_batched_equals_loop_top_down_and_from_the_forward_pass(network, solver, state_init):
    """``state_order='top-down'`` (colour B before A) and ``state_init='forward'`` (the sweep
    starts at the forward pass, its pre-activations reused) give the loop's results."""
    make = NETWORKS[network]
    options = {"state_order": "top-down", "state_init": state_init}
    p1, s1, v1, _ = _run(LiftedSolver, make, solver, **options)
    p2, s2, v2, bat = _run(BatchedLiftedSolver, make, solver, **options)
    assert bat.batched
    # from the forward pass the hidden W-gradients start near zero, where Adam's g/√v turns
    # summation-order rounding into larger steps: 1.4e-10 seen, hence 1e-9 there
    tol = 1e-9 if (solver, state_init) == ("adam", "forward") else TOL
    assert max(float((a - b).abs().max()) for a, b in zip(p1, p2)) < tol
    assert max(abs(a - b) for a, b in zip(v1, v2)) < tol
    if state_init == "store":
        assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) < TOL
    else:   # the store is not written: both still hold the same initial states
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # top-down is a different sweep from bottom-up
    _, _, v0, _ = _run(LiftedSolver, make, solver, state_init=state_init)
    assert max(abs(a - b) for a, b in zip(v0, v1)) > 1e-6


def test_regulariser_and_chain_plan():
    reg = WeightRegularizer("l1", 1e-3)
    p1, _, _v1, _ = _run(LiftedSolver, _relu_mlp, "bcd", reg)
    p2, _, _v2, bat = _run(BatchedLiftedSolver, _relu_mlp, "bcd", reg)
    assert max(float((a - b).abs().max()) for a, b in zip(p1, p2)) < TOL
    plan = bat.plan()
    assert bat.net.colors == [[1, 3], [2, 4]]
    assert (plan.head.index, plan.tail.index) == (0, 4)
    assert [layer.index for layer in plan.even] == [1, 3] and [layer.index for layer in plan.odd] == [2]
    assert (plan.a_states, plan.b_states, plan.tail_in_a) == ((1, 3), (2, 4), False)
    assert uniform_chain(lift(_tanh_mlp()[0], output_activation=Softmax())).tail_in_a
    assert uniform_chain(lift(mlp((20, 32, 16, 32, 5)))) is None         # hidden widths differ
    assert uniform_chain(lift(mlp((20, 32, 5)))) is None                 # no body


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _products_per_sweep(cls, depth):
    torch.manual_seed(0)
    model = mlp((8,) + (16,) * depth + (3,))
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman")
    x = torch.randn(32, 8)
    t = torch.nn.functional.one_hot(torch.randint(0, 3, (32,)), 3).float()
    store = StateStore.from_forward(obj, x)
    solv = cls(obj, "bcd")
    solv.step(x, t, store)                        # first sweep: 20 power iterations
    with _CountOps() as c:
        solv.step(x, t, store)
    return c.ops["aten.bmm"] + c.ops["aten.baddbmm"] + c.ops["aten.mm"] + c.ops["aten.addmm"]


def test_batch_products_do_not_grow_with_depth():
    """Data products (the B·d² work) of a batched sweep: a constant number of launches; the loop
    pays per layer. (‖W_l‖² refreshes stay per layer: matrix-vector products of the layer's own
    cached power iteration, counted here as mm.)"""
    loop6, loop12 = _products_per_sweep(LiftedSolver, 6), _products_per_sweep(LiftedSolver, 12)
    bat6, bat12 = _products_per_sweep(BatchedLiftedSolver, 6), _products_per_sweep(BatchedLiftedSolver, 12)
    assert loop12 - loop6 > 2 * (bat12 - bat6)
    assert bat12 < loop12 / 2


def test_unbatchable_networks_fall_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), ResidualBlock.linear(8), nn.Linear(8, 2)).double()
    net = lift(model)
    assert not batchable(net)
    obj = LiftedObjective(net, "bregman")
    x = torch.randn(10, 6, dtype=torch.float64)
    t = torch.randn(10, 2, dtype=torch.float64)
    s1, s2 = StateStore.from_forward(obj, x), StateStore.from_forward(obj, x)
    w0 = [p.detach().clone() for p in model.parameters()]
    v1 = LiftedSolver(obj, "bcd").step(x, t, s1)
    w1 = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), w0):
            p.copy_(w)
    bat = BatchedLiftedSolver(obj, "bcd")
    assert not bat.batched
    v2 = bat.step(x, t, s2)
    assert abs(v1 - v2) < TOL   # same code path; only the cached ‖W‖ power iterations restart
    assert max(float((a - b.detach()).abs().max()) for a, b in zip(w1, model.parameters())) < TOL


def test_cpu_batch_limit_selects_the_per_layer_path():
    torch.manual_seed(0)
    model = mlp((6, 8, 8, 8, 3)).double()
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman")
    bat = BatchedLiftedSolver(obj, "bcd", cpu_batch_limit=10)
    small = [torch.zeros(10, 6, dtype=torch.float64)]
    large = [torch.zeros(11, 6, dtype=torch.float64)]
    assert bat.batched and bat.plan(small) is not None and bat.plan(large) is None
    assert BatchedLiftedSolver(obj, "bcd", cpu_batch_limit=None).plan(large) is not None
    # gradient-form solvers: short bodies (here 2 layers) take the per-layer path on CPU
    adam = BatchedLiftedSolver(obj, "adam")
    assert adam.batched and adam.plan(small) is None
    assert BatchedLiftedSolver(obj, "adam", cpu_min_body=2).plan(small) is not None


def test_zero_inputs_give_finite_steps_float32():
    """All-zero data: the Gram power iteration meets v = 0 and must not divide 0 by 0."""
    torch.manual_seed(0)
    model = mlp((6, 8, 8, 8, 3), bias=False)        # no bias: x̃ = x = 0, so the Gram maps v to 0
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman")
    x = torch.zeros(5, 6)
    t = torch.nn.functional.one_hot(torch.arange(5) % 3, 3).float()
    store = StateStore.from_forward(obj, x)
    bat = BatchedLiftedSolver(obj, "bcd")
    for _ in range(3):
        v = bat.step(x, t, store)
    assert math.isfinite(v) and all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_body_weights_are_one_persistent_stack_and_the_parameters_stay_the_users():
    """The body weights are one stack kept between sweeps (not re-stacked while only the solver
    changes them); the parameters keep their own storage (never re-bound) and hold every update;
    parameters changed by the user between steps (re-bound, or written in place) are re-stacked,
    and the results still equal the per-layer loop."""
    def run(cls, rebind):
        torch.manual_seed(0)
        model, out_act, method = _relu_mlp()
        model = model.double()
        obj = LiftedObjective(lift(model, output_activation=out_act), method, lam=0.7)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(N, 20, generator=gen, dtype=torch.float64)
        t = torch.nn.functional.one_hot(torch.randint(0, 5, (N,), generator=gen), 5).double()
        store = StateStore.from_forward(obj, x)
        solver = cls(obj, "bcd")
        ids = torch.arange(BATCH)
        own = [p.data_ptr() for p in model.parameters()]
        solver.step(x[ids], t[ids], store, ids)
        assert [p.data_ptr() for p in model.parameters()] == own     # never re-bound
        stack = getattr(solver, "_param_stacks", {}).get("weight", (None,))[0]
        if rebind == "assign":   # a user assigning new tensors: the solver must notice and re-stack
            for lin in (model[2], model[4]):
                lin.weight.data = lin.weight.detach().clone()
        elif rebind == "in-place":
            with torch.no_grad():
                model[4].weight.mul_(0.5)
        solver.step(x[ids], t[ids], store, ids)
        if stack is not None:
            assert solver._param_stacks["weight"][0] is stack        # one stack, kept
        return model, solver

    for rebind in (None, "assign", "in-place"):
        ref, _ = run(LiftedSolver, rebind)
        model, solver = run(BatchedLiftedSolver, rebind)
        assert solver.batched
        stack = solver._param_stacks["weight"][0]
        body = [model[2], model[4], model[6]]
        assert all(torch.equal(lin.weight, stack[i]) for i, lin in enumerate(body))
        assert all(lin.weight.data_ptr() != stack[i].data_ptr() for i, lin in enumerate(body))
        assert max(float((a - b).detach().abs().max()) for a, b in zip(ref.parameters(), model.parameters())) < TOL


def _softmax_chain(widths=(20, 32, 32, 32, 5), device="cpu"):
    """A float64 ReLU MLP with softmax output, its Bregman objective, ``N`` inputs and one-hot
    targets, and the generator that drew them (for the batches)."""
    torch.manual_seed(0)
    model = mlp(widths).double().to(device)
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, widths[0], generator=gen, dtype=torch.float64)
    t = torch.nn.functional.one_hot(torch.randint(0, widths[-1], (N,), generator=gen), widths[-1]).double()
    return model, obj, x.to(device), t.to(device), gen


def test_batched_state_dict_resumes_exactly():
    """The batched path keeps the Gram power-iteration vectors stacked; ``state_dict`` splits them
    into the parent's per-layer form and a fresh solver loading it continues bit for bit."""
    def setup():
        model, obj, x, t, _ = _softmax_chain()
        return model, obj, x, t, StateStore.from_forward(obj, x)

    batches = [torch.randperm(N, generator=torch.Generator().manual_seed(k))[:BATCH] for k in range(6)]
    model, obj, x, t, store = setup()
    straight = BatchedLiftedSolver(obj, "bcd")
    for ids in batches:
        straight.step(x[ids], t[ids], store, ids)
    model2, obj2, x, t, store2 = setup()
    first = BatchedLiftedSolver(obj2, "bcd")
    for ids in batches[:3]:
        first.step(x[ids], t[ids], store2, ids)
    saved = first.state_dict()
    assert all(v is not None and v[0].shape == (lin.in_features,) for v, lin in
               zip(saved["wvec"], [m for m in model2 if isinstance(m, nn.Linear)]))
    resumed = BatchedLiftedSolver(obj2, "bcd")
    resumed.load_state_dict(saved)
    for ids in batches[3:]:
        resumed.step(x[ids], t[ids], store2, ids)
    assert max(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), model2.parameters())) == 0.0


@pytest.mark.parametrize("solver", ["bcd", "adam"])
def test_batched_with_a_reduce_hook_equals_one_process(solver):
    """With a ``reduce_fn`` (data-parallel runs) the batched solver takes the gradient form (no
    fused update) and sends each layer's Gram entries without padding; a hook that returns copies
    (one rank) gives the identity hook's results, and the Gram calls carry Σ_l (d_in + 1) values."""
    sent = []

    def copying_reduce(tensors):
        sent.append([t.numel() for t in tensors])
        return [t.clone() for t in tensors]

    def run(reduce_fn):
        model, obj, x, t, gen = _softmax_chain()
        store = StateStore.from_forward(obj, x)
        solv = BatchedLiftedSolver(obj, solver, reduce_fn=reduce_fn, cpu_min_body=1)
        values = [solv.step(x[ids], t[ids], store, ids)
                  for ids in (torch.randperm(N, generator=gen)[:BATCH] for _ in range(SWEEPS))]
        return [p.detach().clone() for p in model.parameters()], values

    p1, v1 = run(None)
    p2, v2 = run(copying_reduce)
    assert max(float((a - b).abs().max()) for a, b in zip(p1, p2)) < TOL
    assert max(abs(a - b) for a, b in zip(v1, v2)) < TOL
    if solver == "bcd":
        gram = [sum(c) for c in sent if len(c) != 9]          # 8 parameter tensors + statistics
        assert gram and set(gram) == {(20 + 1) + 3 * (32 + 1)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", ["bcd", "adam"])
def test_cuda_batched_equals_cpu_loop(solver):
    """The layer-parallel sweep on a GPU gives the per-layer CPU results (float64)."""
    def run(cls, device):
        model, obj, x, t, gen = _softmax_chain((20, 32, 32, 32, 32, 5), device)
        store = StateStore.from_forward(obj, x)
        # off the forward pass, so that W-gradients are not rounding noise (which Adam would scale up)
        store.states = {s: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(device)
                        for s, v in store.states.items()}
        solv = cls(obj, solver, lr=1e-2 if solver == "adam" else None)
        for _ in range(SWEEPS):
            ids = torch.randperm(N, generator=gen)[:BATCH].to(device)
            solv.step(x[ids], t[ids], store, ids)
        if cls is BatchedLiftedSolver:     # the stacked kernels ran (m = 3 >= cpu_min_body)
            assert solv.plan([x[:BATCH]]) is not None
        return [p.detach().cpu() for p in model.parameters()]

    ref, gpu = run(LiftedSolver, "cpu"), run(BatchedLiftedSolver, "cuda")
    assert max(float((a - b).abs().max()) for a, b in zip(ref, gpu)) < 1e-9


@pytest.mark.parametrize("network", ["relu-bregman", "tanh-fenchel"])
@pytest.mark.parametrize("state_init", ["store", "forward"])
@pytest.mark.parametrize("state_tol", [0.0, 1e-3])
def test_batched_equals_loop_with_several_state_sweeps(network, state_init, state_tol):
    """The state phase (``state_sweeps``, ``state_tol``) runs on the chain's stacks: the same
    weights, states, objectives and number of state sweeps as the per-layer loop."""
    make = NETWORKS[network]
    options = {"state_order": "top-down", "state_init": state_init, "state_sweeps": "auto",
               "state_tol": state_tol}
    p1, s1, v1, ref = _run(LiftedSolver, make, "bcd", **options)
    p2, s2, v2, bat = _run(BatchedLiftedSolver, make, "bcd", **options)
    assert bat.batched
    assert max(float((a - b).abs().max()) for a, b in zip(p1, p2)) < TOL
    assert max(abs(a - b) for a, b in zip(v1, v2)) < TOL
    assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) < TOL
    assert ref.last_state_sweeps == bat.last_state_sweeps
    assert len(ref.state_values) == len(bat.state_values)
    assert all(a == b or abs(a - b) < TOL for a, b in zip(ref.state_values, bat.state_values))
    _, _, v0, _ = _run(LiftedSolver, make, "bcd", state_order="top-down", state_init=state_init)
    assert max(abs(a - b) for a, b in zip(v0, v1)) > 1e-6     # the extra sweeps changed the run
