"""The analysis/synthesis convolution pair: values equal torch's convolutions, exact adjoints,
and gradients equal autograd through torch's kernels (float64)."""
import pytest
import torch
import torch.nn.functional as nnf

from lifted_inverse.networks.conv_pair import analysis, synthesis

SHAPES = [(3, 1, 16, 9, 11, 3), (2, 3, 5, 8, 8, 5), (1, 2, 4, 7, 6, 1)]   # B, C, F, H, W, k


def _data(b, c, f, h, w, k, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g, dtype=dtype), torch.randn(b, f, h, w, generator=g, dtype=dtype),
            torch.randn(f, c, k, k, generator=g, dtype=dtype))


@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_torch_convolutions(shape):
    x, u, w = _data(*shape)
    p = shape[-1] // 2
    assert torch.allclose(analysis(x, w), nnf.conv2d(x, w, padding=p), atol=1e-12)
    assert torch.allclose(synthesis(u, w), nnf.conv_transpose2d(u, w, padding=p), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_synthesis_is_the_adjoint(shape):
    x, u, w = _data(*shape, seed=1)
    lhs = float((analysis(x, w) * u).sum())
    rhs = float((x * synthesis(u, w)).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_autograd_through_torch(shape):
    x, u, w = _data(*shape, seed=2)
    p = shape[-1] // 2
    for ours, ref, inp in ((analysis, lambda a, b: nnf.conv2d(a, b, padding=p), x),
                           (synthesis, lambda a, b: nnf.conv_transpose2d(a, b, padding=p), u)):
        a1, w1 = inp.clone().requires_grad_(True), w.clone().requires_grad_(True)
        a2, w2 = inp.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out1, out2 = ours(a1, w1), ref(a2, w2)
        g = torch.randn_like(out2)
        (out1 * g).sum().backward()
        (out2 * g).sum().backward()
        assert torch.allclose(a1.grad, a2.grad, atol=1e-11)
        assert torch.allclose(w1.grad, w2.grad, atol=1e-11)


def test_gradcheck_and_weight_only_gradients():
    x, u, w = _data(2, 1, 3, 5, 6, 3, seed=3)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: analysis(a, b), (x.clone().requires_grad_(True), w))
    assert torch.autograd.gradcheck(lambda a, b: synthesis(a, b), (u.clone().requires_grad_(True), w))
    # inputs without grad: only the weight gradient is formed
    (g,) = torch.autograd.grad(synthesis(u, w).sum(), w)
    assert g.shape == w.shape and bool(torch.isfinite(g).all())


def test_float32_close_to_torch():
    x, u, w = _data(4, 1, 24, 20, 20, 3, dtype=torch.float32, seed=4)
    ref = nnf.conv_transpose2d(u, w, padding=1)
    assert float((synthesis(u, w) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
