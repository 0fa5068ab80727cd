"""The state phase of the lifted engine (``state_sweeps``, ``state_tol``): several state sweeps
before each W-step descend the state objective, carry the output's residual to the first layer
(so every W-block gets a gradient), and stop at the tolerance."""
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
    assert all(b <= a + 1e-12 * abs(values[0]) for a, b in zip(values[:-1], values[1:])), values
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
    assert all(b <= a + 1e-12 * values[0] for a, b in zip(values[:-1], values[1:])), values
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
        _, obj, solver = _solver(state_init="forward", state_sweeps=8, state_tol=tol)
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
