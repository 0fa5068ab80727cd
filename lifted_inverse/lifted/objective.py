"""The lifted objective over a :class:`~lifted_inverse.lifted.model.LiftedNetwork` (method §1).

    E(Θ, X) = (1/N) Σ_i Σ_l P_l(x_i^{out(l)}, z_l(x_i^{in(l)}; θ_l)) + Σ_l R(θ_l),

with ``x^0`` the input and the last state fixed to the target (``ℓ ≡ 0``). The output layer
always carries its activation's Bregman penalty times ``w`` (``loss_weight``), i.e. the loss
(softmax: cross-entropy minus entropy, identity: ½‖·‖²); hidden layers carry the method's penalty
(Bregman, Fenchel or MAC) with weight ``λ``; coupling layers (``layer.coupling``: residual skips,
``ρ/2‖u_j − u_{j−1} − V h_j − c‖²``; the x-layers of unrolled networks, ``ρ/2‖x_k − q_k‖²``)
carry their Bregman penalty with weight ``ρ``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .model import LiftedNetwork
from .penalties import BregmanPenalty, HomotopySchedule, Penalty, make_penalty


class WeightRegularizer:
    """``R(W) = strength·½‖W‖²`` (``'l2'``) or ``strength·‖W‖₁`` (``'l1'``) on weights (not biases).

    ``prox(params, t)`` applies ``prox_{tR}`` in place: ``W/(1 + t·s)`` or soft-thresholding.
    """

    def __init__(self, kind: str = "l2", strength: float = 1e-4):
        if kind not in ("l1", "l2"):
            raise ValueError(f"regularizer: kind must be 'l1' or 'l2', got {kind!r}")
        if not (strength >= 0 and math.isfinite(strength)):
            raise ValueError(f"regularizer: strength must be >= 0, got {strength}")
        self.kind, self.strength = kind, float(strength)

    @staticmethod
    def _weights(params: Sequence[torch.Tensor]):
        return [p for p in params if p.ndim >= 2]

    def value(self, params: Sequence[torch.Tensor]) -> float:
        ws = self._weights(params)
        if self.kind == "l2":
            return 0.5 * self.strength * float(sum((w * w).sum() for w in ws))
        return self.strength * float(sum(w.abs().sum() for w in ws))

    @torch.no_grad()
    def prox(self, params: Sequence[torch.Tensor], steps: Sequence[float]) -> None:
        for w, t in zip(params, steps):
            if w.ndim < 2:
                continue
            if self.kind == "l2":
                w.div_(1.0 + t * self.strength)
            else:
                w.copy_(torch.sign(w) * (w.abs() - t * self.strength).clamp_min(0.0))

    def __repr__(self):
        return f"WeightRegularizer({self.kind!r}, {self.strength:g})"


class LiftedObjective:
    """Per-layer penalties of the lifted objective (see module docstring).

    Args:
        net: the lifted network.
        method: ``'bregman'``, ``'fenchel'`` or ``'mac'`` (hidden-layer penalty).
        lam: weight λ of the hidden-layer penalties (float or one per layer).
        rho: weight ρ of the coupling layers (residual skips, unrolled x-layers).
        loss_weight: weight ``w`` of the output layer's penalty (the loss).
        homotopy: for MAC, a :class:`HomotopySchedule` multiplying λ by ``μ_k`` at epoch ``k``.
        regularizer: optional :class:`WeightRegularizer`.
    """

    def __init__(self, net: LiftedNetwork, method: str = "bregman", lam: float | Sequence[float] = 1.0,
                 rho: float = 1.0, homotopy: HomotopySchedule | None = None,
                 regularizer: WeightRegularizer | None = None, loss_weight: float = 1.0):
        self.net = net
        self.method = method
        n = len(net.layers)
        lams = [float(lam)] * n if isinstance(lam, (int, float)) else [float(v) for v in lam]
        if len(lams) != n:
            raise ValueError(f"lam: expected one weight per lifted layer ({n}), got {len(lams)}")
        self.lam = lams
        self.rho = float(rho)
        if not (loss_weight > 0 and math.isfinite(loss_weight)):
            raise ValueError(f"loss_weight: expected a positive number, got {loss_weight}")
        self.loss_weight = float(loss_weight)
        if homotopy is None and method == "mac":
            homotopy = HomotopySchedule()
        self.homotopy = homotopy
        self.regularizer = regularizer
        self.penalties: list[Penalty] = []
        make_penalty(method)  # validates the name
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Rebuild the penalties for ``epoch`` (MAC homotopy: λ_l μ_epoch)."""
        mu = self.homotopy(epoch) if self.homotopy is not None else 1.0
        last = len(self.net.layers) - 1
        pens = []
        for layer, lam in zip(self.net.layers, self.lam):
            if layer.index == last:
                pens.append(BregmanPenalty(self.loss_weight))
            elif layer.coupling:
                pens.append(BregmanPenalty(self.rho * mu))
            else:
                pens.append(make_penalty(self.method, lam * mu))
        self.penalties = pens
        self.epoch = int(epoch)

    def settings(self) -> dict:
        """The objective's options (JSON-able), as recorded with a training run."""
        return {"method": self.method, "lam": list(self.lam), "rho": self.rho,
                "loss_weight": self.loss_weight,
                "regularizer": None if self.regularizer is None else repr(self.regularizer)}

    def layer_inputs(self, layer, states):
        return [states[s] for s in layer.inputs]

    def layer_value(self, layer, states, z: torch.Tensor | None = None) -> torch.Tensor:
        """``P_l(x^{out}, z_l)`` per sample, shape ``(B,)``."""
        if z is None:
            z = layer.pre_activation(self.layer_inputs(layer, states))
        return self.penalties[layer.index].value(layer.activation, states[layer.output], z)

    @torch.no_grad()
    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Σ_l P_l`` per sample, shape ``(B,)`` (the data term of E before averaging)."""
        total = None
        for layer in self.net.layers:
            v = self.layer_value(layer, states)
            total = v if total is None else total + v
        return total

    @torch.no_grad()
    def value(self, states: Sequence[torch.Tensor]) -> float:
        """``E(Θ, X)`` for a full set of states (mean over samples plus the regulariser)."""
        e = float(self.energy(states).mean())
        if self.regularizer is not None:
            e += self.regularizer.value(self.net.parameters())
        return e
