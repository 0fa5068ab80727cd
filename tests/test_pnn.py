"""PNN and unrolled networks: exact adjoints, step sizes, the PNN as a special case (their
checkpoints: tests/test_checkpoint.py)."""
import math

import pytest
import torch
import torch.nn.functional as nnf

from lifted_inverse.networks.pnn import PNN, ProximalLayers
from lifted_inverse.networks.unrolled import UnrolledProximalNet
from lifted_inverse.operators import Blur, Identity


def test_adjoint_and_step_from_norm():
    prox = ProximalLayers(channels=1, features=6, layers=2, seed=3).double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    u = torch.randn(2, 6, 16, 16, dtype=torch.float64)
    lhs = (prox.L(0, x) * u).sum().detach()
    rhs = (x * prox.Lt(0, u)).sum().detach()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(lhs.abs())
    # ‖L‖ from the dense matrix on a 16x16 image; the 32x32 power iteration is within 2 %
    n = 16
    eye = torch.eye(n * n, dtype=torch.float64).reshape(-1, 1, n, n)
    w = prox.weights[1].detach()
    dense = nnf.conv2d(eye, w, padding=1).reshape(n * n, -1)
    true = float(torch.linalg.matrix_norm(dense, 2))
    assert abs(float(prox.norms[1]) - true) / true < 0.02
    assert math.isclose(float(prox.tau[1]) * float(prox.norms[1]) ** 2, 1.8, rel_tol=1e-6)


def test_tied_weights_and_shapes():
    net = PNN(features=4, layers=5, tied=True)
    assert len(net.prox.weights) == 1 and net.n_layers == 5
    z = torch.rand(3, 1, 20, 24)
    assert net(z).shape == z.shape
    with pytest.raises(ValueError, match="z: expected 1 channel"):
        net(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="step_factor"):
        PNN(step_factor=2.5)
    with pytest.raises(ValueError, match="lam"):
        PNN(lam=0.0)


def test_first_layer_and_clip_range():
    net = PNN(features=4, layers=3, lam=0.05).double()
    z = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        us = net.states(z)
        expected = (net.prox.tau[0] * net.prox.L(0, z)).clamp(-0.05, 0.05)  # u_0 = 0
    assert torch.allclose(us[0], expected, atol=1e-14)
    assert all(float(u.abs().max()) <= 0.05 + 1e-15 for u in us)


def test_unrolled_with_identity_is_the_pnn():
    pnn = PNN(features=5, layers=4, seed=7).double()
    unr = UnrolledProximalNet(features=5, layers=4, seed=7, data_step=1.0).double()
    unr.load_state_dict(pnn.state_dict())
    z = torch.rand(2, 1, 14, 14, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(unr(z, Identity((1, 14, 14)).double()), pnn(z), atol=1e-12)


def test_unrolled_blur_runs_and_rejects_wrong_operator():
    net = UnrolledProximalNet(features=4, layers=2)
    A = Blur((1, 16, 16), "gaussian")
    y = A(torch.rand(2, 1, 16, 16))
    assert net(y, A).shape == (2, 1, 16, 16)
    with pytest.raises(TypeError, match="A: expected a LinearOperator"):
        net(y, "blur")


def test_subtract_scaled_forms_agree_cpu_and_cuda():
    """``u − τ r`` by the host-scalar form (CPU) and the device form (no host sync)."""
    from lifted_inverse.networks.pnn import subtract_scaled

    gen = torch.Generator().manual_seed(0)
    u, r = (torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    tau = torch.tensor(0.37, dtype=torch.float64)
    ref = u - 0.37 * r
    for host in (True, False, None):
        assert torch.allclose(subtract_scaled(u, tau, r, host_scalar=host), ref, atol=1e-15)
    if torch.cuda.is_available():
        out = subtract_scaled(u.cuda(), tau.cuda(), r.cuda())
        assert torch.allclose(out.cpu(), ref, atol=1e-12)
