"""The lifted training engine (no imaging knowledge; imports only torch)."""
from .activations import (
    ACTIVATIONS, Clip, Identity, LeakyReLU, ProximalActivation, ReLU, Sigmoid, Softmax,
    SoftThreshold, Tanh, as_proximal, make_activation,
)

__all__ = [
    "ACTIVATIONS", "ProximalActivation", "Identity", "ReLU", "LeakyReLU", "SoftThreshold", "Clip",
    "Tanh", "Sigmoid", "Softmax", "make_activation", "as_proximal",
]
