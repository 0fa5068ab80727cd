"""The lifted network that inversion works on (``lift``) against an independent reference.

Each lifted layer of small copies of the three networks the package inverts (perceptron, digits
encoder, residual conv net; built directly, not trained) is checked: layer count, types, state
shapes and activations, ``A x = M(x) − M(0)`` and ``b = M(0)`` for the modules ``M`` the layer
covers (reshapes included), and ``Aᵀ y`` equal to autograd's vector-Jacobian product of
``x ↦ M(x)``. The inversion problem built on it vanishes at the network's own states.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lifted_inverse.inversion.regularizers import make_regularizer
from lifted_inverse.lifted import AffineLayer, ResidualBlock, SkipLayer, lift
from lifted_inverse.lifted.activations import Identity, ReLU
from lifted_inverse.lifted.inverse import LiftedInversion

DT = torch.float64
TOL = 1e-6


def perceptron():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.ReLU()).to(DT)


def encoder():
    torch.manual_seed(1)  # the architecture of pretrained.encoder at code = 12
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 12),
    ).to(DT)


def resnet():
    torch.manual_seed(2)  # the architecture of pretrained.resnet at blocks = 2, channels = 3
    return nn.Sequential(*[
        ResidualBlock(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))
        for _ in range(2)
    ]).to(DT)


# per lifted layer: (type, in_shape, out_shape, activation type, modules M of A x + b as model
# indices; for a residual block (block index, 'inner' | 'outer'))
CASES = {
    "perceptron": (perceptron, (1, 8, 8), [(AffineLayer, (64,), (40,), ReLU, [1])]),
    "encoder": (encoder, (1, 16, 16), [
        (AffineLayer, (1, 16, 16), (8, 8, 8), ReLU, [0]),
        (AffineLayer, (8, 8, 8), (256,), ReLU, [2, 4]),     # the Flatten after the activation
        (AffineLayer, (256,), (12,), Identity, [5]),
    ]),
    "resnet": (resnet, (1, 8, 8), [
        (AffineLayer, (1, 8, 8), (3, 8, 8), ReLU, (0, "inner")),
        (SkipLayer, (1, 8, 8), (1, 8, 8), Identity, (0, "outer")),
        (AffineLayer, (1, 8, 8), (3, 8, 8), ReLU, (1, "inner")),
        (SkipLayer, (1, 8, 8), (1, 8, 8), Identity, (1, "outer")),
    ]),
}


def _affine_reference(module: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """``(M(x) − M(0), M(0), J_Mᵀ y)`` for an affine module ``M``."""
    zero = module(torch.zeros_like(x[:1]))
    xr = x.clone().requires_grad_(True)
    out = module(xr)
    vjp, = torch.autograd.grad(out, xr, y)
    return (out - zero).detach(), zero.detach(), vjp


def _modules(model, where):
    if isinstance(where, tuple):
        return getattr(model[where[0]], where[1])
    return nn.Sequential(*[model[i] for i in where])


@pytest.mark.parametrize("name", sorted(CASES))
def test_lifted_layers_match_the_modules_they_describe(name):
    build, shape, expected = CASES[name]
    model = build().requires_grad_(False)
    net = lift(model, shape)
    assert len(net.layers) == len(expected)
    gen = torch.Generator().manual_seed(3)
    for layer, (kind, s_in, s_out, act, where) in zip(net.layers, expected):
        assert type(layer) is kind
        k = len(layer.inputs) - 1           # the input the layer's own linear map acts on
        assert (net.state_shapes[layer.inputs[0]], layer.out_shape) == (s_in, s_out)
        assert isinstance(layer.activation, act)
        module = _modules(model, where)
        x = torch.randn((2, *net.state_shapes[layer.inputs[k]]), dtype=DT, generator=gen)
        y = torch.randn((2, *s_out), dtype=DT, generator=gen)
        ax, b, aty = _affine_reference(module, x, y)
        if kind is SkipLayer:   # z = u + V h + c: the map V acts on the hidden input h
            zero_u = torch.zeros((2, *s_in), dtype=DT)
            assert torch.allclose(layer.pre_activation([zero_u, x]), ax + b, atol=TOL)
            assert torch.allclose(layer.input_adjoint(0, y), y, atol=TOL)
        else:
            bias = layer.bias if layer.bias is not None else torch.zeros(())
            assert torch.allclose(layer.linear(x), ax, atol=TOL)
            assert torch.allclose(bias.expand_as(b), b, atol=TOL)
        assert torch.allclose(layer.input_adjoint(k, y), aty, atol=TOL)
    u = torch.rand((3, *shape), dtype=DT, generator=gen)
    assert torch.allclose(net.forward_states(u)[-1], model(u), atol=1e-12)
    assert torch.allclose(net.output_layer.activation(net.output_pre_activation(u)), model(u), atol=1e-12)


def test_lifted_network_follows_the_model_dtype():
    model = encoder().float()
    net = lift(model, (1, 16, 16))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = torch.rand((2, 1, 16, 16))
    assert torch.allclose(net.forward_states(x)[-1], model(x), atol=1e-5)


def test_reshapes_are_part_of_the_layers_and_invertible():
    """A reshape after an activation belongs to the layer before it (elementwise σ commutes with
    it), a reshape after a residual block to its skip layer; such a model, including a reshape
    after its last residual block, inverts with zero energy at its own states."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(16, 16), nn.LeakyReLU(0.5), nn.Unflatten(1, (1, 4, 4)),
        ResidualBlock.conv(1, 2), nn.Flatten(), nn.Linear(16, 6), nn.Linear(6, 8),
        nn.Unflatten(1, (2, 4)),
    ).to(DT).requires_grad_(False)
    net = lift(model, (16,))
    kinds = [(type(layer).__name__, layer.out_shape, type(layer.activation).__name__) for layer in net.layers]
    assert kinds == [
        ("AffineLayer", (1, 4, 4), "LeakyReLU"),    # the Unflatten after the activation
        ("AffineLayer", (2, 4, 4), "ReLU"),
        ("SkipLayer", (16,), "Identity"),           # the Flatten after the block
        ("AffineLayer", (6,), "Identity"),          # two linears in a row
        ("AffineLayer", (2, 4), "Identity"),        # trailing Unflatten
    ]
    u = torch.randn((3, 16), dtype=DT, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(net.forward_states(u)[-1], model(u), atol=1e-12)
    tail = nn.Sequential(ResidualBlock.linear(4), nn.Unflatten(1, (2, 2))).to(DT).requires_grad_(False)
    for m, x in ((model, u), (tail, u[:, :4])):
        problem = LiftedInversion(lift(m, tuple(x.shape[1:])), m(x), make_regularizer("l2"), 0.0, x)
        assert problem.energy() < 1e-20


def test_errors_name_the_layer():
    with pytest.raises(TypeError, match=r"module 1.*GELU.*proximal"):
        lift(nn.Sequential(nn.Linear(10, 5), nn.GELU()), (10,))
    with pytest.raises(TypeError, match=r"module 1 \(MaxPool2d\): cannot be lifted"):
        lift(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), (1, 8, 8))
    with pytest.raises(ValueError, match=r"module 1 .*in_features=100.*gives \(64,\)"):
        lift(nn.Sequential(nn.Flatten(), nn.Linear(100, 5), nn.ReLU()), (1, 8, 8))
    with pytest.raises(ValueError, match=r"module 2 .*activation must follow a linear layer"):
        lift(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU()), (4,))
    with pytest.raises(ValueError, match="input_shape"):
        lift(nn.Sequential(nn.Linear(4, 4)), (0,))
    with pytest.raises(TypeError, match="model"):
        lift("not a model", (4,))
