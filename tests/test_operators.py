"""One parametrised test module over every operator in the registry (``OPERATOR_CASES``)."""

import pytest
import torch

from lifted_inverse.operators import (
    OPERATOR_CASES,
    OPERATOR_NAMES,
    Blur,
    Gradient,
    Identity,
    Mask,
    Radon,
    SubsampledFourier,
    gaussian_kernel,
    make_operator,
    motion_kernel,
)

IDS = [name for name, _ in OPERATOR_CASES]
FACTORIES = [factory for _, factory in OPERATOR_CASES]


@pytest.fixture(params=FACTORIES, ids=IDS)
def op(request):
    return request.param()


def _rand(shape, batch=2, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=gen, dtype=dtype)


def test_adjoint(op):
    assert op.adjoint_test(batch=2, seed=1) <= 1e-6


def test_norm_matches_largest_singular_value(op):
    sigma_max = float(torch.linalg.svdvals(op.dense_matrix(dtype=torch.float64))[0])
    assert op.norm(dtype=torch.float64) == pytest.approx(sigma_max, rel=0.01)


def test_autograd_vjp_equals_adjoint(op):
    x = _rand(op.in_shape, seed=2).requires_grad_(True)
    y = _rand(op.out_shape, seed=3)
    (grad,) = torch.autograd.grad((op(x) * y).sum(), x)
    assert torch.allclose(grad, op.adjoint(y), rtol=1e-10, atol=1e-10)


def test_batch_consistency(op):
    x = _rand(op.in_shape, batch=3, seed=4)
    y = _rand(op.out_shape, batch=3, seed=5)
    fx, aty = op(x), op.adjoint(y)
    for i in range(3):
        assert torch.allclose(fx[i:i + 1], op(x[i:i + 1]), rtol=1e-12, atol=1e-12)
        assert torch.allclose(aty[i:i + 1], op.adjoint(y[i:i + 1]), rtol=1e-12, atol=1e-12)


def test_float32_matches_float64(op):
    x = _rand(op.in_shape, seed=6)
    y = _rand(op.out_shape, seed=7)
    f32, a32 = op(x.float()), op.adjoint(y.float())
    assert f32.dtype == torch.float32 and a32.dtype == torch.float32
    f64, a64 = op(x), op.adjoint(y)
    assert torch.linalg.vector_norm(f32.double() - f64) <= 1e-5 * (torch.linalg.vector_norm(f64) + 1e-12)
    assert torch.linalg.vector_norm(a32.double() - a64) <= 1e-5 * (torch.linalg.vector_norm(a64) + 1e-12)


def test_wrong_shape_raises_naming_argument(op):
    bad_in = torch.zeros((2, *op.in_shape[:-1], op.in_shape[-1] + 1), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^x:"):
        op(bad_in)
    bad_out = torch.zeros((2, *op.out_shape[:-1], op.out_shape[-1] + 1), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^y:"):
        op.adjoint(bad_out)
    with pytest.raises(ValueError, match=r"^x:"):
        op(torch.zeros(op.in_shape, dtype=torch.float64))  # missing batch dimension


# ---- operator-specific checks -------------------------------------------------------------

def test_circular_blur_is_circular_convolution():
    k = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # centre (1, 1)
    A = Blur((1, 5, 6), k, "circular")
    x = _rand((1, 5, 6), batch=1, seed=8)
    # y[i,j] = Σ k[m,n] x[i+1-m, j+1-n]: k[0,1] -> x[i+1, j], k[1,2] -> 2 x[i, j-1]
    expected = torch.roll(x, -1, dims=2) + 2 * torch.roll(x, 1, dims=3)
    assert torch.allclose(A(x), expected, atol=1e-12)


def test_zero_blur_matches_circular_in_the_interior():
    k = gaussian_kernel((3, 4), 1.0)
    x = torch.zeros((1, 1, 12, 12), dtype=torch.float64)
    x[..., 4:8, 4:8] = _rand((1, 4, 4), batch=1, seed=9)
    a = Blur((1, 12, 12), k, "zero")(x)
    b = Blur((1, 12, 12), k, "circular")(x)
    assert torch.allclose(a, b, atol=1e-12)
    # and the zero boundary differs from circular when mass reaches the border
    x2 = _rand((1, 12, 12), batch=1, seed=10)
    assert not torch.allclose(Blur((1, 12, 12), k, "zero")(x2), Blur((1, 12, 12), k, "circular")(x2))


def test_kernels_normalised():
    for k in (gaussian_kernel(7, 2.0), gaussian_kernel((4, 6), (1.0, 2.0)), motion_kernel(7, 30.0)):
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-12)
        assert float(k.min()) >= 0
    horizontal = motion_kernel(5, 0.0)
    assert horizontal.shape[0] == 1 and horizontal.shape[1] >= 5


def test_fourier_full_mask_is_unitary():
    A = SubsampledFourier((1, 6, 8), torch.ones(6, 8))
    x = _rand((1, 6, 8), seed=11)
    assert torch.allclose(A.adjoint(A(x)), x, atol=1e-12)
    assert torch.linalg.vector_norm(A(x)) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-12)


def test_bad_parameters_raise_naming_argument():
    nan_kernel = torch.ones(3, 3)
    nan_kernel[1, 1] = float("nan")
    cases = [
        (lambda: Blur((1, 8, 8), nan_kernel), "kernel"),
        (lambda: Blur((1, 8, 8), torch.ones(9, 9), "circular"), "kernel"),
        (lambda: Blur((1, 8, 8), "gauss"), "kernel"),
        (lambda: Blur((1, 8, 8), "box", boundary="reflect"), "boundary"),
        (lambda: Blur((1, 2, 8, 8), "box"), "image_shape"),
        (lambda: Mask((1, 4, 4), torch.full((4, 4), 0.5)), "mask"),
        (lambda: Mask((1, 4, 4), torch.ones(3, 3)), "mask"),
        (lambda: SubsampledFourier((1, 4, 4), torch.zeros(4, 4)), "mask"),
        (lambda: Radon(16, n_angles=0), "n_angles"),
        (lambda: Radon(16, angles=[0.0, float("nan")]), "angles"),
        (lambda: Radon(16, angle_range=(1.0, 0.5)), "angle_range"),
        (lambda: Radon(16, method="fast"), "method"),
        (lambda: Radon(1), "image_size"),
        (lambda: make_operator("deblur", (1, 8, 8)), "name"),
        (lambda: make_operator("blur", (1, 8, 8), sigma=2), "options"),
        (lambda: make_operator("ct", (3, 8, 8)), "image_shape"),
    ]
    for build, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            build()


def test_make_operator_defaults():
    shapes = {"denoise": (1, 16, 16), "blur": (3, 16, 16), "ct": (1, 16, 16), "inpaint": (1, 16, 16),
              "mri": (1, 16, 16)}
    assert set(shapes) == set(OPERATOR_NAMES)
    for name, shape in shapes.items():
        A = make_operator(name, shape)
        assert A.in_shape == shape
        assert A.adjoint_test() <= 1e-6
    ct = make_operator("ct", (1, 16, 16))
    assert ct.out_shape == (1, 60, 23)  # detectors span the diagonal: ceil(16 sqrt(2))
    assert make_operator("ct", (1, 16, 16), n_angles=12).out_shape == (1, 12, 23)
    assert make_operator("ct", (1, 16, 16), n_detectors=16).out_shape == (1, 60, 16)
    blur = make_operator("blur", (1, 16, 16))
    assert tuple(blur.kernel.shape) == (9, 9) and blur.boundary == "circular"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_cuda_matches_cpu(factory):
    A = factory()
    x = _rand(A.in_shape, seed=12)
    y = _rand(A.out_shape, seed=13)
    assert torch.allclose(A(x.cuda()).cpu(), A(x), atol=1e-10)
    assert torch.allclose(A.adjoint(y.cuda()).cpu(), A.adjoint(y), atol=1e-10)


# ---- the zero-boundary blur's FFT path; shapes given as an int or a tuple ----------------------

@pytest.mark.parametrize("kernel_shape, image_shape", [((9, 9), (2, 16, 16)), ((4, 7), (1, 9, 13)),
                                                       ((1, 1), (1, 5, 5)), ((11, 3), (1, 6, 8)),
                                                       ((2, 2), (1, 1, 1))])
def test_zero_blur_is_zero_padded_convolution(kernel_shape, image_shape):
    """The FFT over the padded grid equals the direct convolution (``conv2d`` of the zero-padded
    image with the flipped kernel), kernels larger than the image included."""
    import torch.nn.functional as F

    kh, kw = kernel_shape
    k = torch.randn(kernel_shape, generator=torch.Generator().manual_seed(kh * 31 + kw), dtype=torch.float64)
    x = _rand(image_shape, batch=2, seed=12)
    c, h, w = image_shape
    ch, cw = kh // 2, kw // 2
    xp = F.pad(x.reshape(2 * c, 1, h, w), (kw - 1 - cw, cw, kh - 1 - ch, ch))
    expected = F.conv2d(xp, torch.flip(k, (0, 1))[None, None]).reshape(x.shape)
    A = Blur(image_shape, k, "zero")
    assert torch.allclose(A(x), expected, rtol=1e-12, atol=1e-12)
    assert A.adjoint_test() <= 1e-12


def test_fast_fft_size():
    from lifted_inverse.operators.blur import fast_fft_size

    assert [fast_fft_size(n) for n in (1, 2, 7, 132, 136, 257)] == [2, 2, 8, 144, 144, 270]


@pytest.mark.parametrize("build", [
    lambda s: Blur(s, "box", "zero"), lambda s: Blur(s, "gaussian"),
    lambda s: Mask(s, torch.ones(16, 16)), lambda s: SubsampledFourier(s, torch.ones(16, 16)),
    lambda s: Identity(s), lambda s: Gradient(s),
], ids=["blur-zero", "blur-circular", "mask", "fourier", "denoise", "gradient"])
def test_constructors_take_an_int_or_a_shape(build):
    for given in (16, (16, 16), [1, 16, 16], (1, 16, 16), torch.Size([16, 16])):
        assert build(given).in_shape == (1, 16, 16)
    for bad in ("16", 16.0, (16.0, 16), (1, 1, 16, 16), (16,), None, True, (0, 16), -3, (True, 16)):
        with pytest.raises(ValueError, match=r"^(image_shape|shape): expected"):
            build(bad)
