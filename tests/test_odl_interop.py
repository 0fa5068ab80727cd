"""ODL 1.0 interop: wrap ODL's RayTransform as ours, expose ours to ODL's diagnostics."""
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from lifted_inverse.operators import Blur, Radon
from lifted_inverse.operators.odl_interop import from_odl, odl_ray_transform, to_odl

odl = pytest.importorskip("odl")


@pytest.fixture(scope="module")
def phantom33():
    return torch.from_numpy(resize(shepp_logan_phantom(), (33, 33), anti_aliasing=True))[None, None]


def test_wrapped_skimage_ray_transform(phantom33):
    A = from_odl(odl_ray_transform(33, 20, impl="skimage"))
    assert A.in_shape == (1, 33, 33) and A.out_shape == (1, 20, 47)
    # skimage's backprojector is not the exact adjoint of its projector: a loose, honest bound
    assert A.adjoint_test() < 0.01
    ours = Radon(33, 20)(phantom33)
    theirs = A(phantom33)
    assert float((theirs - ours).norm() / ours.norm()) < 0.12
    # batch loop inside the wrapper and autograd through the ODL adjoint
    x = torch.cat([phantom33, 2 * phantom33]).requires_grad_(True)
    y = A(x)
    assert torch.allclose(y[1], 2 * y[0], rtol=1e-10)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), x)
    assert torch.allclose(grad, A.adjoint(g))


def test_wrapped_astra_matches_radon(phantom33):
    pytest.importorskip("astra")
    A = from_odl(odl_ray_transform(33, 20, impl="astra_cpu"))
    assert A.adjoint_test() < 1e-6
    ours = Radon(33, 20)(phantom33)
    assert float((A(phantom33) - ours).norm() / ours.norm()) < 0.02


def test_from_odl_rejects_bad_input():
    with pytest.raises(TypeError, match="^odl_operator:"):
        from_odl(np.eye(3))
    space = odl.rn(3)
    with pytest.raises(ValueError, match="^odl_operator:"):
        from_odl(odl.PowerOperator(space, 2) if hasattr(odl, "PowerOperator") else _nonlinear(space))


def _nonlinear(space):
    class Square(odl.Operator):
        def __init__(self):
            super().__init__(space, space, linear=False)

        def _call(self, x):
            return x * x

    return Square()


def test_to_odl_diagnostics():
    from odl.core.operator.oputils import power_method_opnorm

    ours = Blur((1, 16, 16), "gaussian", "zero")
    B = to_odl(ours)
    assert B.is_linear and B.adjoint.adjoint is B
    x = B.domain.element(np.random.default_rng(0).standard_normal((1, 16, 16)))
    y = B.range.element(np.random.default_rng(1).standard_normal((1, 16, 16)))
    lhs, rhs = B(x).inner(y), x.inner(B.adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    assert power_method_opnorm(B, maxiter=300, rtol=1e-8) == pytest.approx(ours.norm(), rel=1e-3)
    # round trip: ODL view of ours, wrapped back, is the same map
    back = from_odl(to_odl(Radon(12, 7)))
    assert back.adjoint_test() < 1e-10
    z = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    assert torch.allclose(back(z), Radon(12, 7)(z))


def test_odl_solver_runs_on_ours():
    """ODL's CGLS on our Blur solves a well-posed deconvolution."""
    ours = Blur((1, 12, 12), torch.tensor([[0.1, 0.8, 0.1]], dtype=torch.float64), "circular")
    B = to_odl(ours)
    truth = B.domain.element(np.random.default_rng(2).standard_normal((1, 12, 12)))
    data = B(truth)
    x = B.domain.zero()
    odl.solvers.conjugate_gradient_normal(B, x, data, niter=100)
    assert (x - truth).norm() < 1e-6 * truth.norm()


def test_wrapped_astra_fan_beam_matches_radon():
    """ODL's fan-beam RayTransform (flat detector, astra_cpu) of our FanBeamGeometry: the same
    rays (a wrong orientation or detector axis gives ~100 % differences), up to the two line
    models."""
    pytest.importorskip("astra")
    from lifted_inverse.operators import FanBeamGeometry
    from lifted_inverse.operators.analytic import ellipse_image
    from lifted_inverse.operators.odl_interop import odl_fan_ray_transform

    g = FanBeamGeometry((33, 40), 30, 81, 1.2, 70.0, 30.0, pixel_size=0.8, angle_range=(0.5, 4.5),
                        detector_offset=0.3)
    A = from_odl(odl_fan_ray_transform(g, impl="astra_cpu"))
    assert A.in_shape == (1, 33, 40) and A.out_shape == (1, 30, 81)
    # ODL 1.0's ASTRA fan-beam backprojection is not the exact adjoint of its projection (unlike
    # its parallel one): a loose, honest bound
    assert A.adjoint_test() < 0.05
    x = ellipse_image([(1.0, 10, 6, 5, -3, 0.3), (0.5, 3, 3, -7, 6, 0.0)], (33, 40), 0.8, smoothness=1)
    ours = Radon(geometry=g)(x)
    assert float((A(x) - ours).norm() / ours.norm()) < 0.03
    # and ours, seen from ODL, is a linear ODL operator with our adjoint
    B = to_odl(Radon(geometry=g))
    u = B.domain.element(np.random.default_rng(3).standard_normal((1, 33, 40)))
    v = B.range.element(np.random.default_rng(4).standard_normal((1, 30, 81)))
    assert abs(B(u).inner(v) - u.inner(B.adjoint(v))) <= 1e-10 * abs(B(u).inner(v))


def test_odl_fan_ray_transform_rejects_parallel():
    from lifted_inverse.operators import ParallelBeamGeometry
    from lifted_inverse.operators.odl_interop import odl_fan_ray_transform

    with pytest.raises(TypeError, match="^geometry:"):
        odl_fan_ray_transform(ParallelBeamGeometry(16))
