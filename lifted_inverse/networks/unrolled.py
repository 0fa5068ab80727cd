"""Unrolled proximal networks for a forward operator ``A`` (method §4, last item).

For ``min_x ½‖A x − y‖² + λ‖L x‖₁`` each layer takes a gradient step on the data term and then
one warm-started dual forward–backward step for the proximal map of ``λ‖L_k ·‖₁`` (the PNN layer
of :mod:`.pnn`), i.e. an unrolled inexact proximal gradient method:

    v_k = x_{k−1} − γ A*(A x_{k−1} − y)
    u_k = clip_λ(u_{k−1} − τ_k L_k(L_k* u_{k−1} − v_k))
    x_k = v_k − L_k* u_k,                                    k = 1..K,

with ``u_0 = 0``, ``x_0`` an initial reconstruction (:func:`initial_estimate`), ``γ = data_step /
‖A‖²`` and ``τ_k = step_factor / ‖L_k‖²``. With ``fidelity='ramp'`` (CT) the data term is the
ramp-weighted ``½‖H^{1/2}(A x − y)‖²`` (:class:`~lifted_inverse.operators.SinogramFilter`): the
layers are the same with ``(A, y)`` replaced by ``(H^{1/2} A, H^{1/2} y)``, so each data step
``x − γ A* H (A x − y)`` is a filtered backprojection of the residual (preconditioned Landweber).
Shapes: ``y`` (B, *A.out_shape), ``x_k`` (B, C, H, W)
= (B, *A.in_shape), ``u_k`` (B, F, H, W). ``A`` and ``A*`` act inside every layer. For ``A = I``
and ``γ = 1`` the data step returns ``v_k = y`` and the network is exactly the PNN.

``A`` is passed to ``forward`` (it depends on the image size: a blur of a 40×40 training patch
and of a 256×256 test image are different operators); the network holds only ``L_k``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..lifted.unrolled import DataStep, unrolled_network
from ..operators.base import LinearOperator
from ..operators.sinogram_filter import SinogramFilter
from .pnn import ProximalLayers, _check_image


def initial_estimate(A: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``x_0``: ``y`` when ``A`` maps images to images of the same shape (denoising, blur),
    the FBP when ``A`` has one (CT), else ``A* y / ‖A‖²``."""
    if tuple(A.in_shape) == tuple(A.out_shape):
        return y
    if hasattr(A, "fbp"):
        return A.fbp(y)
    return A.adjoint(y) / A.norm(dtype=y.dtype, device=y.device) ** 2


FIDELITIES = ("l2", "ramp")


def ramp_weighted(A: LinearOperator) -> tuple[SinogramFilter, LinearOperator]:
    """``(H^{1/2}, H^{1/2} A)`` for a CT operator ``A`` (one with ``fbp``), built once per ``A`` so
    that the power-iterated norm of the composition is computed once."""
    if not hasattr(A, "fbp"):
        raise ValueError(f"A: the 'ramp' fidelity needs a CT operator with an FBP, got {type(A).__name__}")

    def build():
        W = SinogramFilter(A.out_shape, "ramp", 0.5)
        return W, W @ A
    return A.derived("ramp_weighted", build)


def data_term(A: LinearOperator, y: torch.Tensor, fidelity: str = "l2") -> tuple[LinearOperator, torch.Tensor]:
    """The ``(A_d, y_d)`` of the data term ``½‖A_d x − y_d‖²``: ``(A, y)`` for ``'l2'``,
    ``(H^{1/2} A, H^{1/2} y)`` for ``'ramp'``."""
    if fidelity == "l2":
        return A, y
    if fidelity == "ramp":
        W, WA = ramp_weighted(A)
        return WA, W(y)
    raise ValueError(f"fidelity: expected one of {FIDELITIES}, got {fidelity!r}")


def data_step_size(A: LinearOperator, data_step: float, like: torch.Tensor) -> float:
    """``γ = data_step / ‖A‖²`` (power-iterated norm, cached by the operator)."""
    return data_step / A.norm(dtype=torch.float64, device=like.device) ** 2


def gradient_step(A: LinearOperator, x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """``v = x − γ A*(A x − y)``."""
    return x - gamma * A.adjoint(A(x) - y)


class UnrolledProximalNet(nn.Module):
    """The unrolled proximal-gradient network of the module docstring.

    Args (besides those of :class:`~.pnn.ProximalLayers`):
        data_step: ``γ ‖A‖²`` in (0, 2) (gradient steps on ½‖Ax − y‖² are stable for < 2).
        fidelity: ``'l2'`` (``½‖Ax − y‖²``) or ``'ramp'`` (``½‖H^{1/2}(Ax − y)‖²``, CT only).
    """

    def __init__(self, channels: int = 1, features: int = 16, layers: int = 8, lam: float = 0.1,
                 step_factor: float = 1.8, tied: bool = False, kernel_size: int = 3,
                 data_step: float = 1.0, init_norm: float = 1.0, seed: int = 0, fidelity: str = "l2"):
        super().__init__()
        if not 0 < data_step < 2:
            raise ValueError(f"data_step: expected 0 < data_step < 2, got {data_step}")
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity: expected one of {FIDELITIES}, got {fidelity!r}")
        self.fidelity = fidelity
        self.prox = ProximalLayers(channels, features, layers, lam, step_factor, tied, kernel_size,
                                   init_norm=init_norm, seed=seed)
        self.data_step = float(data_step)
        self.config = dict(channels=channels, features=features, layers=layers, lam=lam,
                           step_factor=step_factor, tied=tied, kernel_size=kernel_size,
                           data_step=data_step, init_norm=init_norm, seed=seed, fidelity=fidelity)

    @property
    def n_layers(self) -> int:
        return self.prox.n_layers

    def _check_operator(self, A, name: str) -> None:
        if not isinstance(A, LinearOperator):
            raise TypeError(f"{name}: expected a LinearOperator, got {type(A).__name__}")
        if A.in_shape[0] != self.prox.channels or len(A.in_shape) != 3:
            raise ValueError(f"{name}: expects images {A.in_shape}, the network has "
                             f"{self.prox.channels} channel(s)")

    def data_problem(self, y: torch.Tensor, A: LinearOperator, x0: torch.Tensor | None = None):
        """``(A_d, y_d, x_0)``: the data term's operator and data (:func:`data_term`) and the
        initial estimate (from the raw ``A``, ``y``) that every layer and the lifted solver use."""
        self._check_operator(A, "A")
        x = initial_estimate(A, y) if x0 is None else x0
        _check_image(x, self.prox.channels, "x0")
        A_d, y_d = data_term(A, y, self.fidelity)
        return A_d, y_d, x

    def states(self, y: torch.Tensor, A: LinearOperator, x0: torch.Tensor | None = None):
        """Forward-pass states ``([u_1..u_K], [x_0..x_K])``."""
        A, y, x = self.data_problem(y, A, x0)
        gamma = data_step_size(A, self.data_step, y)
        u = self.prox.zero_state(x)
        us, xs = [], [x]
        for k in range(self.n_layers):
            v = gradient_step(A, x, y, gamma)
            u = self.prox.layer(k, u, v)
            x = v - self.prox.Lt(k, u)
            us.append(u)
            xs.append(x)
        return us, xs

    def forward(self, y: torch.Tensor, A: LinearOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        return self.states(y, A, x0)[1][-1]

    def lifted_network(self, input_shape=None, operator: LinearOperator | None = None):
        """The lifted form for :func:`~lifted_inverse.lifted.lift` with the fixed operator ``A``
        (:mod:`lifted_inverse.lifted.unrolled`): the data step ``x − γA_d*(A_d x − y_d)`` of this
        network's data term inside the layers, and ``y -> (y_d, x_0)`` (:meth:`data_problem`)
        as the fixed input states."""
        if operator is None:
            raise TypeError("operator: an unrolled network is lifted with its forward operator A")
        self._check_operator(operator, "operator")
        A = operator
        if input_shape is not None and tuple(int(n) for n in input_shape) != tuple(A.out_shape):
            raise ValueError(f"input_shape: the measurements of A have shape {tuple(A.out_shape)}, "
                             f"got {tuple(input_shape)}")
        A_d = A if self.fidelity == "l2" else ramp_weighted(A)[1]
        like = next(iter(self.prox.weights))
        step = DataStep(A_d, data_step_size(A_d, self.data_step, like))

        def inputs(y):
            _, y_d, x0 = self.data_problem(y, A)
            return y_d, x0
        return unrolled_network(self, self.prox, tuple(A.in_shape), data_step=step,
                                input_shape=tuple(A.out_shape), input_map=inputs)
