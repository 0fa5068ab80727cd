"""Penalties: Fenchel = 2·B for ReLU, gradients vs autograd, state prox, homotopy."""
import pytest
import torch

from lifted_inverse.lifted import activations as A
from lifted_inverse.lifted.penalties import (
    BregmanPenalty,
    FenchelPenalty,
    HomotopySchedule,
    MACPenalty,
    make_penalty,
)


def _yz(seed=0, shape=(5, 7)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.relu(torch.randn(shape, generator=g, dtype=torch.float64))
    return y, z


def test_fenchel_relu_is_twice_bregman_and_gu_formula():
    y, z = _yz()
    relu = A.ReLU()
    fen = FenchelPenalty().value(relu, y, z)
    assert torch.allclose(fen, 2 * relu.bregman(y, z), atol=1e-12)
    # Gu et al. (2020), ReLU: B(y, z) = ½‖y‖² + ½‖max(z, 0)‖² − ⟨y, z⟩ for y ≥ 0, doubled
    gu = (y * y + torch.relu(z) ** 2 - 2 * y * z).sum(dim=1)
    assert torch.allclose(fen, gu, atol=1e-12)
    assert fen.min() >= 0


@pytest.mark.parametrize("pen", [BregmanPenalty(1.5), FenchelPenalty(), MACPenalty(0.7)])
@pytest.mark.parametrize("act", [A.ReLU(), A.Tanh(), A.SoftThreshold(0.2), A.Softmax()])
def test_grad_z_matches_autograd(pen, act):
    y, z = _yz(1)
    y = act(torch.randn_like(z)) if not isinstance(act, A.Softmax) else torch.softmax(3 * z.flip(0), 1)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(pen.value(act, y, zz).sum(), zz)
    assert torch.allclose(pen.grad_z(act, y, z), g, atol=1e-9)


@pytest.mark.parametrize("pen", [BregmanPenalty(2.0), MACPenalty(0.5)])
def test_state_prox_step_minimises_linearised_model(pen):
    """x⁺ = prox_y(v, t) minimises ½‖x − v‖² + t·(non-smooth part); for Bregman that is t·s·F."""
    act = A.ReLU()
    v = torch.linspace(-2, 2, 9, dtype=torch.float64)[None]
    t = 0.4
    xp = pen.prox_y(act, v, t)
    grid = torch.linspace(0, 3, 30001, dtype=torch.float64)[:, None]
    if isinstance(pen, BregmanPenalty):
        obj = 0.5 * (grid - v) ** 2 + t * pen.scale * 0.5 * grid ** 2
        best = grid[obj.argmin(dim=0), 0]
        assert torch.allclose(xp[0], best, atol=2e-4)
    else:
        assert torch.equal(xp, v)
    # smooth part gradient vs autograd
    y, z = _yz(2)
    yy = y.clone().requires_grad_(True)
    value = pen.value(act, yy, z).sum()
    if isinstance(pen, BregmanPenalty):  # remove the non-smooth part s·F(y) = s(½‖y‖²) on y ≥ 0
        value = value - pen.scale * 0.5 * (yy ** 2).sum()
    (g,) = torch.autograd.grad(value, yy)
    assert torch.allclose(pen.grad_y_smooth(act, y, z), g, atol=1e-9)


def test_homotopy_schedule():
    h = HomotopySchedule(0.5, 2.0, 3.0)
    assert [h(k) for k in range(4)] == [0.5, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="homotopy"):
        HomotopySchedule(1.0, 0.5, 2.0)


def test_bad_penalty_arguments():
    with pytest.raises(ValueError, match="unknown penalty"):
        make_penalty("lpom2")
    with pytest.raises(ValueError, match="scale"):
        BregmanPenalty(-1.0)
    assert make_penalty("fenchel").scale == 2.0
