"""The state phase of the lifted engine (``state_sweeps``, ``state_tol``): several state sweeps
before each W-step descend the state objective, carry the output's residual to the first layer
(so every W-block gets a gradient), and stop at the tolerance."""
import itertools

import pytest
import torch

from lifted_inverse.lifted import Softmax, lift
from lifted_inverse.lifted.batched import BatchedLiftedSolver
from lifted_inverse.lifted.objective import LiftedObjective
from lifted_inverse.lifted.solvers import LiftedSolver, StateStore
from lifted_inverse.networks import mlp

DEEP = (6, 12, 12, 12, 12, 12, 12, 12, 12, 3)      # 8 hidden layers: 8 free states


pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n=60, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 2.5 * torch.randn(classes, d, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % classes
    x = centres[labels] + torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, torch.nn.functional.one_hot(labels, classes).double()


def _solver(cls=LiftedSolver, widths=DEEP, **kw):
    torch.manual_seed(0)
    model = mlp(widths).double()
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman", lam=0.3)
    return model, obj, cls(obj, "bcd", **kw)


@pytest.mark.parametrize("cls", [LiftedSolver, BatchedLiftedSolver])
@pytest.mark.parametrize("order", ["bottom-up", "top-down", "backward"])
def test_state_sweeps_never_increase_the_state_objective(cls, order):
    """Every state step is a descent step of a convex block: F(X) is non-increasing over the
    sweeps of one state phase (tolerance 0 up to rounding: every sweep runs and is recorded)."""
    x, t = _blobs()
    _, obj, solver = _solver(cls, state_order=order, state_sweeps=12, state_tol=1e-300, state_lr=1.9)
    net = obj.net
    fwd = net.forward_states(x)
    states = solver.batch_states(x, t, {s: fwd[s] for s in net.free_states})
    solver.solve_states(states, {})
    values = solver.state_values
    assert solver.last_state_sweeps == len(values) - 1 >= 2
    assert all(b <= a + 1e-12 * abs(values[0]) for a, b in itertools.pairwise(values)), values
    assert values[-1] < values[0]
    assert values[-1] == pytest.approx(obj.value(states), rel=1e-12)


@pytest.mark.parametrize("cls", [LiftedSolver, BatchedLiftedSolver])
def test_full_batch_objective_is_monotone_with_several_state_sweeps(cls):
    """Full-batch BCD with a multi-sweep state phase: the reported objectives (at the W-step,
    after the state phase) never increase from one step to the next."""
    x, t = _blobs()
    _, obj, solver = _solver(cls, state_sweeps="auto")
    store = StateStore.from_forward(obj, x)
    values = [solver.step(x, t, store, None) for _ in range(15)]
    assert all(b <= a + 1e-12 * values[0] for a, b in itertools.pairwise(values)), values
    assert values[-1] < values[0]


def _first_layer_change(**kw) -> float:
    x, t = _blobs()
    model, _, solver = _solver(state_init="forward", state_order="top-down", **kw)
    w0 = model[0].weight.detach().clone()
    solver.step(x, t)
    return float((model[0].weight.detach() - w0).norm() / w0.norm())


def test_one_sweep_leaves_the_first_layer_still_and_auto_sweeps_move_it():
    """From the forward pass one top-down sweep carries the output's residual about two states
    down the chain: the first W-block's gradient is rounding noise. With 'auto' (one sweep per
    free state) the residual reaches it and the first layer moves."""
    one = _first_layer_change(state_sweeps=1)
    auto = _first_layer_change(state_sweeps="auto")
    assert one < 1e-12
    assert auto > 1e-6
    _, _, solver = _solver(state_sweeps="auto")
    assert solver.max_state_sweeps == len(DEEP) - 2


def test_state_tol_stops_the_phase_early():
    """A tolerance the first sweep cannot beat stops after it; tolerance 0 runs every sweep."""
    x, t = _blobs()
    for tol, want in ((0.999, 1), (0.0, 8)):
        _, _, solver = _solver(state_init="forward", state_sweeps=8, state_tol=tol)
        solver.step(x, t)
        assert solver.last_state_sweeps == want
        assert len(solver.state_values) == (want + 1 if tol > 0 else 0)


def test_state_phase_arguments_are_checked():
    _, obj, solver = _solver()
    assert solver.max_state_sweeps == 1 and solver.settings()["state_sweeps"] == 1
    for bad in (0, -1, 1.5, "many", True):
        with pytest.raises(ValueError, match="state_sweeps"):
            LiftedSolver(obj, "bcd", state_sweeps=bad)
    for bad in (-1e-3, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="state_tol"):
            LiftedSolver(obj, "bcd", state_tol=bad)
    assert LiftedSolver(obj, "bcd", state_sweeps=None).state_sweeps == "auto"


# ---- options of the one engine (issue 15, D2): continuation, warm starts, ISGM's proximal term


def _step(task_name, extra, **cfg):
    from lifted_inverse.training import TaskConfig, TrainConfig, make_task
    from lifted_inverse.training.trainer import make_step, resolve_for

    task = make_task(task_name, TaskConfig(seed=0, extra=extra))
    config = resolve_for(task, TrainConfig(method="bregman", **cfg))
    return task, config, make_step(task, config)


def test_penalty_continuation_scales_hidden_and_coupling_weights_per_epoch():
    """``penalty_growth``/``penalty_max``: λ and ρ (never the loss) times
    ``min(penalty_max, growth^epoch)``; refused where it cannot apply."""
    from lifted_inverse.training import TrainConfig, make_task, train

    _, config, step = _step("digits-resnet", {"blocks": 2, "width": 16}, solver="bcd",
                            penalty_growth=2.0, penalty_max=3.0)
    net, obj = step.net, step.objective
    last = len(net.layers) - 1
    coupling = [layer.index for layer in net.layers if layer.coupling and layer.index != last]
    hidden = [layer.index for layer in net.layers if not layer.coupling and layer.index != last]
    assert coupling and hidden
    for epoch, mu in ((0, 1.0), (1, 2.0), (5, 3.0)):
        step.set_epoch(epoch)
        assert all(obj.penalties[i].scale == pytest.approx(config.lam * mu) for i in hidden)
        assert all(obj.penalties[i].scale == pytest.approx(config.rho * mu) for i in coupling)
        assert obj.penalties[last].scale == 1.0
    _, _, plain = _step("digits-resnet", {"blocks": 2, "width": 16}, solver="bcd")
    plain.set_epoch(5)
    assert plain.objective.penalties[hidden[0]].scale == pytest.approx(config.lam)
    task = make_task("digits-mlp")
    for bad, match in (({"penalty_growth": 0.5}, "penalty_growth"), ({"penalty_max": 10.0}, "penalty_max"),
                       ({"method": "backprop", "penalty_growth": 2.0}, "penalty_growth")):
        with pytest.raises(ValueError, match=match):
            train(task, TrainConfig(**{"method": "bregman", "epochs": 1, **bad}))


def test_warm_started_states_carry_over_to_the_next_visit():
    """``state_init='store'``: a batch's solved states are kept per sample and are where its next
    visit starts (the other samples keep theirs); ``'forward'`` keeps nothing."""
    task, _, step = _step("digits-mlp", {}, solver="bcd", state_init="store", state_sweeps=2)
    net = step.net
    ids = torch.arange(0, 64)
    others = torch.arange(64, 128)
    before = step.store.gather(others)
    step(ids)
    x, _ = task.train_batch(ids)
    fwd = net.forward_states(x)
    kept = step.store.gather(ids)
    assert any(not torch.allclose(kept[s], fwd[s]) for s in net.free_states)
    assert all(torch.equal(step.store.gather(others)[s], before[s]) for s in net.free_states)
    seen = {}
    solve = step.solver.solve_states

    def record(states, cache=None):
        seen.update({s: states[s].clone() for s in net.free_states})
        return solve(states, cache)
    step.solver.solve_states = record
    step(ids)
    assert all(torch.equal(seen[s], kept[s]) for s in net.free_states)
    _, _, fresh = _step("digits-mlp", {}, solver="bcd", state_init="forward")
    assert fresh.store is None


@pytest.mark.parametrize("task_name, extra", [
    ("digits-mlp", {}), ("pnn-denoise", {"n_train": 16, "layers": 4, "features": 4, "test_size": 32})])
def test_isgm_proximal_term_is_on_by_default_and_holds_the_weights(task_name, extra):
    """ISGM's ``(η/2)‖θ − θ^k‖²`` is on by default (η = 1/τ = 1, engine and imaging presets), and
    read: a large η moves the weights by less than none (τ = inf) from the same start."""
    moves = {}
    for tau in (None, 1e-4, float("inf")):
        task, config, step = _step(task_name, extra, solver="isgm", batch_size=16,
                                   **({} if tau is None else {"tau": tau}))
        if tau is None:
            assert config.tau == 1.0 and step.solver.prox_weight == 1.0
        w0 = [p.detach().clone() for p in task.model.parameters()]
        step(torch.arange(16))
        moves[tau] = sum(float((p.detach() - w).pow(2).sum()) for p, w in zip(task.model.parameters(), w0))
    assert moves[float("inf")] > 0
    assert moves[1e-4] < 0.5 * moves[float("inf")]
