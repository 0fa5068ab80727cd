"""The sinogram filter ``H^p``: it is the FBP's filter, PSD, and its ``p = 1/2`` weighting turns
Landweber steps into preconditioned ones (the data step of the unrolled CT network)."""
import pytest
import torch

from lifted_inverse.datasets import shepp_logan
from lifted_inverse.networks.unrolled import UnrolledProximalNet, data_term
from lifted_inverse.operators import Blur, Radon, SinogramFilter


def test_power_one_is_the_fbp_filter():
    A = Radon(24, n_angles=20, n_detectors=35).double()
    y = torch.randn(2, *A.out_shape, dtype=torch.float64)
    H = SinogramFilter(A.out_shape, "shepp-logan", power=1.0)
    fbp = A.fbp(y, filter="shepp-logan", backprojector="adjoint", mask_outside=False)
    assert torch.allclose(A.angle_step * A.adjoint(H(y)), fbp, rtol=1e-10, atol=1e-12)


def test_square_root_is_positive_semidefinite():
    W = SinogramFilter((1, 6, 31))
    y = torch.randn(20, 1, 6, 31, dtype=torch.float64)
    assert bool(((W(y) * y).flatten(1).sum(1) >= -1e-12).all())
    # W² differs from H only by the crop between the two halves: close on the sampled bins
    H = SinogramFilter((1, 6, 31), power=1.0)
    assert float((W(W(y)) - H(y)).norm() / H(y).norm()) < 0.2


def test_ramp_weighted_landweber_is_preconditioned():
    """Eight steps on ½‖H^{1/2}(Ax − y)‖² beat a hundred plain Landweber steps on ½‖Ax − y‖²
    (figures: docs/results.md)."""
    x = shepp_logan(48)[None].double()
    A = Radon(48, n_angles=40, n_detectors=68).double()
    y = A(x)

    def landweber(A_d, y_d, steps):
        gamma = 1.0 / A_d.norm(dtype=torch.float64) ** 2
        z = torch.zeros_like(x)
        for _ in range(steps):
            z = z - gamma * A_d.adjoint(A_d(z) - y_d)
        return float((z - x).norm() / x.norm())

    A_w, y_w = data_term(A, y, "ramp")
    assert landweber(A_w, y_w, 8) < 0.9 * landweber(A, y, 100)


def test_unrolled_net_with_ramp_fidelity():
    A = Radon(16, n_angles=12, n_detectors=23)
    net = UnrolledProximalNet(features=3, layers=2, fidelity="ramp")
    out = net(A(torch.rand(2, 1, 16, 16)), A)
    assert out.shape == (2, 1, 16, 16) and bool(torch.isfinite(out).all())
    assert data_term(A, A(torch.rand(1, 1, 16, 16)), "ramp")[0] is data_term(A, A(torch.rand(1, 1, 16, 16)), "ramp")[0]


def test_bad_input():
    with pytest.raises(ValueError, match="sinogram_shape"):
        SinogramFilter((5, 7))
    with pytest.raises(ValueError, match="filter"):
        SinogramFilter((1, 5, 7), "box")
    with pytest.raises(ValueError, match="power"):
        SinogramFilter((1, 5, 7), power=0.0)
    with pytest.raises(ValueError, match="fidelity"):
        UnrolledProximalNet(features=2, layers=1, fidelity="l1")
    with pytest.raises(ValueError, match="A: the 'ramp' fidelity"):
        UnrolledProximalNet(features=2, layers=1, fidelity="ramp")(torch.rand(1, 1, 8, 8), Blur((1, 8, 8), "box"))
