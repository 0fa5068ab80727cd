"""``describe`` (the inversion solvers' stage chain) against an independent reference.

Each stage ``x ↦ σ(A x + b)`` / ``x ↦ x + V σ(A x + b) + c`` is checked on small copies of the three
networks the package inverts (perceptron, digits encoder, residual conv net; built directly, not
trained): stage count, types and shapes as recorded from the original module-walking
implementation, ``A x = M(x) − M(0)`` and ``b = M(0)`` for the modules ``M`` the stage covers, and
``Aᵀ y`` equal to autograd's vector-Jacobian product of ``x ↦ M(x)``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lifted_inverse.inversion import (
    AffineStage,
    Residual,
    ResidualStage,
    describe,
    forward_states,
    load_checkpoint,
    save_checkpoint,
)
from lifted_inverse.inversion.layers import output_activation, output_pre_activation
from lifted_inverse.lifted import ResidualBlock
from lifted_inverse.lifted.activations import Clip, Identity, LeakyReLU, ReLU, SoftThreshold

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


# per stage: (kind, in_shape, out_shape, activation type, modules M of A x + b as model indices)
CASES = {
    "perceptron": (perceptron, (1, 8, 8), [("affine", (1, 8, 8), (40,), ReLU, slice(0, 2))]),
    "encoder": (encoder, (1, 16, 16), [
        ("affine", (1, 16, 16), (8, 8, 8), ReLU, slice(0, 1)),
        ("affine", (8, 8, 8), (16, 4, 4), ReLU, slice(2, 3)),
        ("affine", (16, 4, 4), (12,), Identity, slice(4, 6)),
    ]),
    "resnet": (resnet, (1, 8, 8), [("residual", (1, 8, 8), (1, 8, 8), ReLU, 0),
                                   ("residual", (1, 8, 8), (1, 8, 8), ReLU, 1)]),
}


def _affine_reference(module: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """``(M(x) − M(0), M(0), J_Mᵀ y)`` for an affine module ``M``."""
    zero = module(torch.zeros_like(x[:1]))
    xr = x.clone().requires_grad_(True)
    out = module(xr)
    vjp, = torch.autograd.grad(out, xr, y)
    return (out - zero).detach(), zero.detach(), vjp


@pytest.mark.parametrize("name", sorted(CASES))
def test_stages_match_the_modules_they_describe(name):
    build, shape, expected = CASES[name]
    model = build().requires_grad_(False)
    stages = describe(model, shape)
    assert len(stages) == len(expected)
    gen = torch.Generator().manual_seed(3)
    for stage, (kind, s_in, s_out, act, where) in zip(stages, expected):
        assert isinstance(stage, AffineStage if kind == "affine" else ResidualStage)
        assert (stage.in_shape, stage.out_shape) == (s_in, s_out)
        assert isinstance(stage.activation, act)
        if kind == "affine":
            pairs = [(stage.op, stage.bias, model[where])]
        else:
            block = model[where]
            pairs = [(stage.op, stage.bias, block.inner), (stage.out_op, stage.out_bias, block.outer)]
        for op, bias, module in pairs:
            x = torch.randn((2, *op.in_shape), dtype=DT, generator=gen)
            y = torch.randn((2, *op.out_shape), dtype=DT, generator=gen)
            ax, b, aty = _affine_reference(module, x, y)
            assert bias.shape == (1, *op.out_shape)
            assert torch.allclose(op(x), ax.reshape(op(x).shape), atol=TOL)
            assert torch.allclose(bias, b.reshape(bias.shape), atol=TOL)
            assert torch.allclose(op.adjoint(y), aty, atol=TOL)
            assert op.adjoint_test(dtype=DT) < 1e-12
    u = torch.rand((3, *shape), dtype=DT, generator=gen)
    assert torch.allclose(forward_states(stages, u), model(u), atol=1e-12)
    hidden = forward_states(stages[:-1], u)
    z = output_pre_activation(stages[-1], hidden)
    assert torch.allclose(output_activation(stages[-1])(z), model(u), atol=1e-12)


def test_stage_operators_follow_the_model_dtype():
    model = encoder().float()
    stages = describe(model, (1, 16, 16))
    assert all(s.bias.dtype == torch.float32 for s in stages)
    x = torch.rand((2, 1, 16, 16))
    assert torch.allclose(forward_states(stages, x), model(x), atol=1e-5)


def test_reshape_placement_and_explicit_reshape_stage():
    """Reshapes after an activation belong to the next stage, trailing ones to the last stage, and a
    reshape right before a residual block becomes its own identity-activation stage."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(16, 16), nn.LeakyReLU(0.5), nn.Unflatten(1, (1, 4, 4)),
        ResidualBlock.conv(1, 2), nn.Flatten(), nn.Linear(16, 6), nn.Linear(6, 8),
        nn.Unflatten(1, (2, 4)),
    ).to(DT).requires_grad_(False)
    stages = describe(model, (16,))
    kinds = [(type(s).__name__, s.in_shape, s.out_shape, type(s.activation).__name__) for s in stages]
    assert kinds == [
        ("AffineStage", (16,), (16,), "LeakyReLU"),
        ("AffineStage", (16,), (1, 4, 4), "Identity"),   # the Unflatten before the block
        ("ResidualStage", (1, 4, 4), (1, 4, 4), "ReLU"),
        ("AffineStage", (1, 4, 4), (6,), "Identity"),    # Flatten, Linear; two linears in a row
        ("AffineStage", (6,), (2, 4), "Identity"),       # trailing Unflatten
    ]
    assert isinstance(stages[0].activation, LeakyReLU)
    assert float(stages[1].bias.abs().max()) == 0.0 and stages[1].bias.dtype == DT
    assert stages[1].op.adjoint_test(dtype=DT) < 1e-12
    u = torch.randn((3, 16), dtype=DT, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(forward_states(stages, u), model(u), atol=1e-12)


def test_errors_name_the_layer():
    with pytest.raises(TypeError, match=r"module 1.*GELU.*proximal"):
        describe(nn.Sequential(nn.Linear(10, 5), nn.GELU()), (10,))
    with pytest.raises(TypeError, match=r"module 1 \(MaxPool2d\): cannot be lifted"):
        describe(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), (1, 8, 8))
    with pytest.raises(ValueError, match=r"module 1 .*in_features=100.*gives \(64,\)"):
        describe(nn.Sequential(nn.Flatten(), nn.Linear(100, 5), nn.ReLU()), (1, 8, 8))
    with pytest.raises(ValueError, match=r"module 2 .*activation must follow a linear layer"):
        describe(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU()), (4,))
    with pytest.raises(ValueError, match="reshape after the last residual block"):
        describe(nn.Sequential(ResidualBlock.linear(4), nn.Unflatten(1, (2, 2))), (4,))
    with pytest.raises(ValueError, match="input_shape"):
        describe(nn.Sequential(nn.Linear(4, 4)), (0,))
    with pytest.raises(TypeError, match="model"):
        describe("not a model", (4,))


def test_residual_compatibility_builder():
    torch.manual_seed(6)
    body = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 5))
    block = Residual(body)
    assert isinstance(block, ResidualBlock)
    assert block.inner is body[0] and block.outer is body[2]
    x = torch.randn(3, 5)
    assert torch.allclose(block(x), x + body(x))
    with pytest.raises(TypeError, match=r"body: expected nn.Sequential\(linear, activation, linear\)"):
        Residual(nn.Sequential(nn.Linear(5, 5), nn.ReLU()))
    with pytest.raises(TypeError, match="body"):
        Residual(nn.Linear(5, 5))


# ---- checkpoints of residual blocks -----------------------------------------------------------
def test_checkpoint_stores_residual_blocks_with_their_activation(tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(
        ResidualBlock(nn.Linear(6, 4), nn.LeakyReLU(0.3), nn.Linear(4, 6)),
        ResidualBlock(nn.Linear(6, 5), SoftThreshold(0.2), nn.Linear(5, 6, bias=False)),
        nn.Linear(6, 3), Clip(0.5),
    )
    path = tmp_path / "net.pt"
    save_checkpoint(model, (6,), path)
    spec = torch.load(path, weights_only=True)["architecture"]["layers"]
    assert spec[0]["type"] == "ResidualBlock"
    assert spec[0]["activation"] == {"type": "ProximalActivation", "name": "leaky_relu",
                                     "negative_slope": pytest.approx(0.3)}
    assert spec[3] == {"type": "ProximalActivation", "name": "clip", "lam": 0.5}
    loaded, shape = load_checkpoint(path)
    x = torch.randn(4, 6)
    assert shape == (6,) and torch.equal(loaded(x), model(x))
    assert isinstance(loaded[1].activation, SoftThreshold)
    assert float(loaded[1].activation.alpha) == pytest.approx(0.2)


def test_checkpoint_reads_the_former_residual_format(tmp_path):
    """Files written with ``{"type": "Residual", "body": ...}`` and ``body.0.*`` keys still load."""
    torch.manual_seed(8)
    conv = lambda a, b: {"type": "Conv2d", "in_channels": a, "out_channels": b, "kernel_size": [3, 3],
                         "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
                         "bias": True}
    body = {"type": "Sequential", "layers": [conv(1, 3), {"type": "Softshrink", "lambd": 0.1}, conv(3, 1)]}
    w = {f"{i}.body.{j}.{p}": torch.randn(s) for i in range(2)
         for j, shapes in ((0, {"weight": (3, 1, 3, 3), "bias": (3,)}), (2, {"weight": (1, 3, 3, 3), "bias": (1,)}))
         for p, s in shapes.items()}
    torch.save({"format": "lifted_inverse.sequential", "version": 1, "input_shape": [1, 6, 6],
                "architecture": {"type": "Sequential", "layers": [{"type": "Residual", "body": body}] * 2},
                "state_dict": w}, tmp_path / "old.pt")
    model, shape = load_checkpoint(tmp_path / "old.pt")
    assert shape == (1, 6, 6) and all(isinstance(b, ResidualBlock) for b in model)
    x = torch.randn(2, 1, 6, 6)
    expected = x
    for i in range(2):
        h = nn.functional.conv2d(expected, w[f"{i}.body.0.weight"], w[f"{i}.body.0.bias"], padding=1)
        h = nn.functional.softshrink(h, 0.1)
        expected = expected + nn.functional.conv2d(h, w[f"{i}.body.2.weight"], w[f"{i}.body.2.bias"], padding=1)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert len(describe(model, shape)) == 2
