"""lift(model): forward agreement, exact adjoints, closed-form weight gradients, norms, errors."""
import pytest
import torch
from torch import nn

from lifted_inverse.lifted import ResidualBlock, Softmax, lift
from lifted_inverse.networks import mlp, resnet_conv, resnet_mlp


def _models():
    torch.manual_seed(0)
    return {
        "mlp": (mlp((12, 16, 16, 5)).double(), (12,)),
        "cnn": (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(3, 4, 3),
                              nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).double(), (2, 8, 8)),
        "resnet": (resnet_mlp(12, 8, 4, blocks=3).double(), (12,)),
        "resnet_conv": (resnet_conv(1, 3, 6, 4, blocks=2).double(), (1, 6, 6)),
        "unflatten": (nn.Sequential(nn.Linear(8, 18), nn.Unflatten(1, (2, 3, 3)), nn.ReLU(),
                                    nn.Conv2d(2, 2, 3, padding=1), nn.Sigmoid()).double(), (8,)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_forward_states_reproduce_model(name):
    model, shape = _models()[name]
    net = lift(model, shape)
    x = torch.randn(4, *shape, dtype=torch.float64)
    states = net.forward_states(x)
    out = model(x).detach()
    ends_in_activation = not isinstance(list(model.modules())[-1], (nn.Linear, nn.Conv2d, nn.Flatten))
    mine = states[-1] if ends_in_activation else net.output_pre_activation(x)
    assert torch.allclose(mine.reshape(out.shape), out, atol=1e-12)
    # colour groups: no two states of a group share a layer
    for group in net.colors:
        for layer in net.layers:
            members = [s for s in (*layer.inputs, layer.output) if s in group]
            assert len(members) <= 1


@pytest.mark.parametrize("name", list(_models()))
def test_adjoints_weight_grads_and_norms(name):
    model, shape = _models()[name]
    net = lift(model, shape)
    g = torch.Generator().manual_seed(1)
    states = net.forward_states(torch.randn(3, *shape, dtype=torch.float64, generator=g))
    for layer in net.layers:
        xs = [torch.randn(st.shape, generator=g, dtype=torch.float64) for st in
              (states[s] for s in layer.inputs)]
        r = torch.randn(states[layer.output].shape, generator=g, dtype=torch.float64)
        zero = layer.pre_activation([torch.zeros_like(t) for t in xs])
        for k in range(len(xs)):
            only = [torch.zeros_like(t) for t in xs]
            only[k] = xs[k]
            lhs = ((layer.pre_activation(only) - zero) * r).sum()
            rhs = (xs[k] * layer.input_adjoint(k, r)).sum()
            assert abs(float((lhs - rhs).detach())) <= 1e-10 * max(1.0, abs(float(lhs.detach())))
            # ‖A_k‖² from the cached power iteration vs the dense Jacobian
            def lin(t, k=k, xs=xs, layer=layer, zero=zero):
                inp = [torch.zeros_like(u[:1]) for u in xs]
                inp[k] = t[None]
                return (layer.pre_activation(inp) - zero[:1])[0]
            jac = torch.autograd.functional.jacobian(lin, xs[k][0]).reshape(zero[0].numel(), -1)
            exact = float(torch.linalg.matrix_norm(jac, 2)) ** 2
            # a step-size estimate: power iteration from below, within 1% (descent needs > L/2)
            est = layer.input_lipschitz(k)
            assert exact * 0.99 <= est <= exact * (1 + 1e-9)
        with torch.enable_grad():
            params = layer.parameters()
            auto = torch.autograd.grad((layer.pre_activation(xs) * r).sum(), params)
        for a, b in zip(auto, layer.weight_grad(xs, r)):
            assert torch.allclose(a, b, atol=1e-10)


def test_affine_layer_api_for_inversion():
    model = mlp((6, 4, 3)).double()
    net = lift(model, output_activation=Softmax())
    first = net.blocks[0]
    x = torch.randn(2, 6, dtype=torch.float64)
    assert torch.allclose(first.linear(x), x @ model[0].weight.t())
    assert torch.allclose(first.pre_activation(x), model[0](x))
    assert first.bias.shape == (1, 4) and first.in_shape == (6,) and first.out_shape == (4,)
    assert first.weight_norm() == pytest.approx(float(torch.linalg.matrix_norm(model[0].weight.detach(), 2)), rel=1e-6)
    assert isinstance(net.output_layer.activation, Softmax)
    res = lift(resnet_mlp(6, 4, 2, blocks=2).double())
    view = res.blocks[1]
    u = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(view(u), res.model[2](u), atol=1e-12)
    assert view.W.out_shape == (4,) and view.V.in_shape == (4,)


def test_weights_live_in_the_user_model():
    model = mlp((4, 3, 2))
    net = lift(model)
    assert net.parameters()[0] is model[0].weight
    with torch.no_grad():
        net.parameters()[0].zero_()
    assert float(model[0].weight.detach().abs().sum()) == 0.0


def test_bad_models_raise_clear_errors():
    with pytest.raises(TypeError, match=r"module 1: activation GELU"):
        lift(nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"module 2 .*expects per-sample input of shape \(5,\)"):
        lift(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(ValueError, match=r"add nn.Flatten"):
        lift(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(8, 2)), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        lift(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(TypeError, match=r"module 1 \(Dropout\): cannot be lifted"):
        lift(nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.ReLU()))
    with pytest.raises(ValueError, match=r"module 0 \(residual block\): the outer map gives"):
        lift(nn.Sequential(ResidualBlock(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))), input_shape=(4,))
    with pytest.raises(TypeError, match=r"module 0 \(residual block\): activation ELU"):
        lift(nn.Sequential(_Body(nn.Sequential(nn.Linear(4, 3), nn.ELU(), nn.Linear(3, 4)))),
             input_shape=(4,))
    net = lift(mlp((4, 3, 2)))
    with pytest.raises(ValueError, match="x: contains NaN"):
        net.forward_states(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 4\)"):
        net.forward_states(torch.zeros(2, 5))


class _Body(nn.Module):
    """A residual module in the ``x + body(x)`` style (duck-typed by lift)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def test_activation_shape_is_recorded_before_a_following_reshape():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8, 6), nn.Unflatten(1, (2, 3)), nn.Tanh(), nn.Flatten())
    net = lift(model, input_shape=(1, 4, 4))
    first, second = net.blocks
    assert (first.activation_shape, first.out_shape) == ((2, 2, 2), (8,))
    assert (second.activation_shape, second.out_shape) == ((2, 3), (6,))
