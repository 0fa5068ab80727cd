"""The lifted training engine (no imaging knowledge; imports only torch).

* :mod:`.activations`  σ = prox_Ψ with Ψ, prox, F*, Bregman penalty B_Ψ
* :mod:`.penalties`    MAC-QP, Fenchel, lifted Bregman: one ``Penalty`` interface
* :mod:`.layers`       ``ResidualBlock`` (a torch module the engine lifts)
* :mod:`.model`        ``lift(model) -> LiftedNetwork``: the lifted view of a torch model
"""
from .activations import (
    ACTIVATIONS, Clip, Identity, LeakyReLU, ProximalActivation, ReLU, Sigmoid, Softmax,
    SoftThreshold, Tanh, as_proximal, make_activation,
)
from .layers import ResidualBlock
from .model import AffineLayer, LiftedLayer, LiftedNetwork, LinearMap, ResidualView, SkipLayer, lift
from .penalties import (
    BregmanPenalty, FenchelPenalty, HomotopySchedule, MACPenalty, Penalty, make_penalty,
)

__all__ = [
    "ACTIVATIONS", "ProximalActivation", "Identity", "ReLU", "LeakyReLU", "SoftThreshold", "Clip",
    "Tanh", "Sigmoid", "Softmax", "make_activation", "as_proximal", "ResidualBlock",
    "lift", "LiftedNetwork", "LiftedLayer", "AffineLayer", "SkipLayer", "ResidualView", "LinearMap",
    "Penalty", "BregmanPenalty", "FenchelPenalty", "MACPenalty", "HomotopySchedule", "make_penalty",
]
