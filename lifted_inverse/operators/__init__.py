"""Forward operators: batched torch linear maps with exact adjoints."""
from .base import Adjoint, Composition, Identity, LinearOperator, Scaled, Sum, check_batch, check_finite
from .gradient import Gradient, total_variation

__all__ = [
    "LinearOperator", "Adjoint", "Composition", "Sum", "Scaled", "Identity",
    "Gradient", "total_variation", "check_batch", "check_finite",
]
