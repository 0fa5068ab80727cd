"""Proximal neural network (PNN) denoiser: the unrolled dual forward–backward algorithm (method §4).

For ``min_x ½‖x − z‖² + λ‖L x‖₁`` the dual forward–backward iteration reads

    u_k = clip_λ(u_{k−1} − τ_k L_k(L_k* u_{k−1} − z)),  k = 1..K,  u_0 = 0,
    x   = z − L_K* u_K,

because ``prox_{τ g*}`` of ``g = λ‖·‖₁`` is the clipping to ``[−λ, λ]``. Unrolling K iterations
with a learned analysis operator ``L_k`` per layer gives the PNN. Shapes: the image
``z ∈ (B, C, H, W)``, the dual states ``u_k ∈ (B, F, H, W)``; ``L_k`` is a 3×3 convolution
``C → F`` ('same' zero padding, no bias) and ``L_k*`` its exact adjoint (transposed convolution).

Step sizes: ``τ_k = step_factor / ‖L_k‖²`` with ``‖L_k‖`` from a seeded, warm-started power
iteration of ``L_k* L_k`` on a ``probe_size²`` image. The steps are buffers, not functions of the
weights in the autograd graph: trainers call :meth:`ProximalLayers.refresh_steps` after each
weight update ("refreshed"), for lifted and backprop training alike.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..lifted.unrolled import unrolled_network
from ..linalg import power_iteration
from .conv_pair import analysis, synthesis, weight_gradient


def subtract_scaled(u: torch.Tensor, tau: torch.Tensor, r: torch.Tensor,
                    host_scalar: bool | None = None) -> torch.Tensor:
    """``u − τ r`` for a 0-d tensor ``τ``: on CPU ``sub(alpha=float(τ))`` (one pass; ``addcmul``
    with a 0-d tensor is slower), elsewhere ``addcmul`` (reading ``τ`` on the host
    would synchronise the device once per layer). ``host_scalar`` forces either form."""
    if host_scalar is None:
        host_scalar = u.device.type == "cpu"
    if host_scalar:
        return torch.sub(u, r, alpha=float(tau))
    return torch.addcmul(u, tau.to(device=u.device, dtype=u.dtype), r, value=-1)


class ProximalLayers(nn.Module):
    """The learned analysis operators ``L_k`` of K dual forward–backward layers.

    Args:
        channels: image channels ``C``.
        features: dual channels ``F`` (outputs of ``L_k``).
        layers: ``K``.
        lam: clipping level λ > 0 (the weight of the ℓ1 prior ``g = λ‖·‖₁``).
        step_factor: ``τ_k ‖L_k‖²`` in (0, 2) (dual forward–backward converges for < 2).
        tied: one ``L`` shared by all layers.
        kernel_size: odd size of the convolution kernels.
        init_norm: ``‖L_k‖`` after initialisation (zero-mean random kernels, rescaled).
        probe_size: side of the image used by the power iteration.
        seed: initialisation seed.
    """

    def __init__(self, channels: int = 1, features: int = 16, layers: int = 6, lam: float = 0.1,
                 step_factor: float = 1.8, tied: bool = False, kernel_size: int = 3,
                 init_norm: float = 1.0, probe_size: int = 32, seed: int = 0):
        super().__init__()
        for name, v in (("channels", channels), ("features", features), ("layers", layers),
                        ("probe_size", probe_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd integer, got {kernel_size!r}")
        if not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"lam: clipping level must be positive, got {lam}")
        if not 0 < step_factor < 2:
            raise ValueError(f"step_factor: expected 0 < step_factor < 2, got {step_factor}")
        if not init_norm > 0:
            raise ValueError(f"init_norm: expected > 0, got {init_norm}")
        self.channels, self.features, self.n_layers = channels, features, layers
        self.lam, self.step_factor, self.tied = float(lam), float(step_factor), bool(tied)
        self.kernel_size, self.probe_size = kernel_size, probe_size
        gen = torch.Generator().manual_seed(int(seed))
        n_weights = 1 if tied else layers
        weights = []
        for _ in range(n_weights):
            w = torch.randn(features, channels, kernel_size, kernel_size, generator=gen)
            w = w - w.mean(dim=(2, 3), keepdim=True)  # high-pass (difference-like) filters
            weights.append(w)
        self.weights = nn.ParameterList([nn.Parameter(w) for w in weights])
        self.register_buffer("tau", torch.ones(n_weights))
        self.register_buffer("norms", torch.ones(n_weights))
        self.register_buffer("probes", torch.randn(n_weights, 1, channels, probe_size, probe_size,
                                                   generator=gen))
        with torch.no_grad():
            self.refresh_steps(iterations=50)
            for i, w in enumerate(self.weights):
                w.mul_(init_norm / float(self.norms[i]))
            self.refresh_steps(iterations=5)

    # ---- the operators ---------------------------------------------------------------------
    def index(self, k: int) -> int:
        """Weight index of layer ``k`` (0-based)."""
        if not 0 <= k < self.n_layers:
            raise IndexError(f"k: layer index {k} out of range [0, {self.n_layers})")
        return 0 if self.tied else k

    def weight(self, k: int) -> torch.Tensor:
        return self.weights[self.index(k)]

    def L(self, k: int, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L_k x``: (B, C, H, W) → (B, F, H, W)."""
        w = self.weight(k) if weight is None else weight
        return analysis(x, w.to(x.dtype))

    def Lt(self, k: int, u: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L_k* u`` (exact adjoint of :meth:`L`): (B, F, H, W) → (B, C, H, W)."""
        w = self.weight(k) if weight is None else weight
        return synthesis(u, w.to(u.dtype))

    def weight_gradient(self, k: int, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``∂⟨g, L_k x⟩/∂L_k`` summed over the batch (x (B, C, H, W), g (B, F, H, W)), in the
        weight's shape (closed form, no autograd)."""
        w = self.weight(k)
        return weight_gradient(x, g, w.detach().to(x.dtype))

    def step(self, k: int) -> torch.Tensor:
        """``τ_k`` (a 0-d tensor, not in the autograd graph)."""
        return self.tau[self.index(k)]

    def pre_activation(self, k: int, u: torch.Tensor, v: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
        """``p = u − τ_k L_k(L_k* u − v)`` with ``u`` (B, F, H, W), ``v`` (B, C, H, W)."""
        return self.dual_step(k, u, self.L(k, self.Lt(k, u, weight) - v, weight))

    def dual_step(self, k: int, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``u − τ_k r`` (:func:`subtract_scaled`)."""
        return subtract_scaled(u, self.step(k), r)

    def activation(self, p: torch.Tensor) -> torch.Tensor:
        """``clip_λ(p)`` = ``prox_{τ g*}`` for ``g = λ‖·‖₁``."""
        return p.clamp(-self.lam, self.lam)

    def layer(self, k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One dual forward–backward layer ``clip_λ(u − τ_k L_k(L_k* u − v))``."""
        return self.activation(self.pre_activation(k, u, v))

    def zero_state(self, v: torch.Tensor) -> torch.Tensor:
        b, _, h, w = v.shape
        return v.new_zeros(b, self.features, h, w)

    # ---- step sizes --------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_norm_sq(self, i: int, weight: torch.Tensor | None = None, iterations: int = 3):
        """``(‖L‖², v)`` for weight index ``i`` (or a candidate ``weight``) by ``iterations``
        power-iteration steps of ``L* L`` warm-started from the stored probe; nothing is stored.
        The estimate is ``‖L*L v‖`` for the last unit ``v`` (between the Rayleigh quotient and
        ``‖L‖²``, the closer of the two)."""
        w = (self.weights[i] if weight is None else weight).detach()
        lam, v = power_iteration(lambda v: synthesis(analysis(v, w), w), self.probes[i].to(w.dtype),
                                 iterations, rtol=0.0, estimate="norm")
        return max(lam, 1e-12), v

    @torch.no_grad()
    def set_norm(self, i: int, norm_sq: float, probe: torch.Tensor | None = None) -> None:
        """Store ``‖L_i‖ = sqrt(norm_sq)`` and set ``τ_i = step_factor / norm_sq``."""
        self.norms[i] = math.sqrt(norm_sq)
        self.tau[i] = self.step_factor / norm_sq
        if probe is not None:
            self.probes[i].copy_(probe.to(self.probes.dtype))

    @torch.no_grad()
    def refresh_steps(self, iterations: int = 3) -> torch.Tensor:
        """Re-estimate every ``‖L_k‖`` (:meth:`estimate_norm_sq`, warm-started) and set
        ``τ_k = step_factor / ‖L_k‖²``. Returns the norms (shape ``(n_weights,)``)."""
        for i in range(len(self.weights)):
            self.set_norm(i, *self.estimate_norm_sq(i, iterations=iterations))
        return self.norms.clone()

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, features={self.features}, layers={self.n_layers}, "
                f"lam={self.lam}, step_factor={self.step_factor}, tied={self.tied}")


class PNN(nn.Module):
    """The PNN denoiser ``z ↦ z − L_K* u_K`` (see the module docstring); input/output (B, C, H, W).

    Keyword arguments are those of :class:`ProximalLayers`. ``forward(z)`` works for any H, W.
    """

    def __init__(self, channels: int = 1, features: int = 16, layers: int = 6, lam: float = 0.1,
                 step_factor: float = 1.8, tied: bool = False, kernel_size: int = 3,
                 init_norm: float = 1.0, seed: int = 0):
        super().__init__()
        self.prox = ProximalLayers(channels, features, layers, lam, step_factor, tied, kernel_size,
                                   init_norm=init_norm, seed=seed)
        self.config = dict(channels=channels, features=features, layers=layers, lam=lam,
                           step_factor=step_factor, tied=tied, kernel_size=kernel_size,
                           init_norm=init_norm, seed=seed)

    @property
    def n_layers(self) -> int:
        return self.prox.n_layers

    def states(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The forward-pass dual states ``[u_1, …, u_K]``, each (B, F, H, W)."""
        _check_image(z, self.prox.channels, "z")
        u = self.prox.zero_state(z)
        out = []
        for k in range(self.n_layers):
            u = self.prox.layer(k, u, z)
            out.append(u)
        return out

    def output(self, z: torch.Tensor, u_last: torch.Tensor, weight: torch.Tensor | None = None):
        """``x = z − L_K* u_K``."""
        return z - self.prox.Lt(self.n_layers - 1, u_last, weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(z, self.states(z)[-1])

    def lifted_network(self, input_shape=None, operator=None):
        """The lifted form for :func:`~lifted_inverse.lifted.lift` (dual layers and the output
        layer of :mod:`lifted_inverse.lifted.unrolled`) for noisy images of ``input_shape``
        ``(C, H, W)``; the PNN applies no forward operator."""
        if operator is not None:
            raise TypeError("operator: the PNN denoiser applies no forward operator (use UnrolledProximalNet)")
        if input_shape is None:
            raise ValueError(f"input_shape: needed to lift the PNN, e.g. ({self.prox.channels}, 40, 40)")
        shape = tuple(int(n) for n in input_shape)
        if len(shape) != 3 or shape[0] != self.prox.channels:
            raise ValueError(f"input_shape: expected ({self.prox.channels}, H, W), got {shape}")
        return unrolled_network(self, self.prox, shape)


def _check_image(x: torch.Tensor, channels: int, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channel(s), got shape {tuple(x.shape)}")
