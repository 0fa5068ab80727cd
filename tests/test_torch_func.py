"""Every registry operator under ``torch.func``: ``vjp`` is the adjoint, ``jvp`` is the forward map
(the operators are linear: ``J_A(x) t = A t``), ``vmap`` over an extra leading axis is the
operator applied to each slice, and ``jacrev`` is the dense matrix (float64). Operators computed
outside autograd (Radon's kernels, the ODL wrapper) go through ``operators.linear_function``.
"""
import pytest
import torch
from torch.func import jacrev, jvp, vjp, vmap

from lifted_inverse.operators import OPERATOR_CASES, Blur, gaussian_kernel

CASES = list(OPERATOR_CASES)
try:  # the ODL wrapper (numpy inside) around one of ours: exact adjoint, no ODL backend needed
    import odl  # noqa: F401

    from lifted_inverse.operators.odl_interop import from_odl, to_odl

    CASES.append(("odl-wrapped-blur",
                  lambda: from_odl(to_odl(Blur((1, 6, 7), gaussian_kernel((3, 4), 1.0), "zero")))))
except ImportError:  # pragma: no cover - odl is a dependency
    pass


@pytest.fixture(params=[factory for _, factory in CASES], ids=[name for name, _ in CASES])
def op(request):
    return request.param()


def _rand(shape, batch=2, seed=0):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_vjp_is_adjoint(op):
    x, y = _rand(op.in_shape, seed=1), _rand(op.out_shape, seed=2)
    out, pullback = vjp(op, x)
    assert _close(out, op(x))
    (back,) = pullback(y)
    assert _close(back, op.adjoint(y))


def test_vjp_of_adjoint_is_forward(op):
    x, y = _rand(op.in_shape, seed=3), _rand(op.out_shape, seed=4)
    _, pullback = vjp(op.adjoint, y)
    (back,) = pullback(x)
    assert _close(back, op(x))


def test_jvp_is_forward(op):
    x, t = _rand(op.in_shape, seed=5), _rand(op.in_shape, seed=6)
    out, tangent = jvp(op, (x,), (t,))
    assert _close(out, op(x))
    assert _close(tangent, op(t))
    y, s = _rand(op.out_shape, seed=7), _rand(op.out_shape, seed=11)
    _, tangent_adj = jvp(op.adjoint, (y,), (s,))
    assert _close(tangent_adj, op.adjoint(s))


def test_vmap_over_a_leading_axis(op):
    """``vmap(A)`` on ``(N, B, *in_shape)`` is ``A`` on each ``(B, *in_shape)`` slice (also along
    axis 1, and for the adjoint)."""
    xs, ys = _rand((2, *op.in_shape), batch=3, seed=8), _rand((2, *op.out_shape), batch=3, seed=9)
    expected = torch.stack([op(x) for x in xs])
    assert _close(vmap(op)(xs), expected)
    assert _close(vmap(op, in_dims=1)(xs.transpose(0, 1)), expected)
    assert _close(vmap(op.adjoint)(ys), torch.stack([op.adjoint(y) for y in ys]))


def test_jacrev_is_the_matrix(op):
    x = _rand(op.in_shape, batch=1, seed=10)
    jac = jacrev(op)(x)
    n_out, n_in = op.dense_matrix().shape
    assert _close(jac.reshape(n_out, n_in), op.dense_matrix())
