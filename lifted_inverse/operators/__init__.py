"""Forward operators: batched torch linear maps with exact adjoints."""
from .base import Adjoint, Composition, Identity, LinearOperator, Scaled, Sum, check_batch, check_finite
from .gradient import Gradient, total_variation

__all__ = [
    "LinearOperator", "Adjoint", "Composition", "Sum", "Scaled", "Identity",
    "Gradient", "total_variation", "check_batch", "check_finite",
]
from .blur import Blur, box_kernel, gaussian_kernel, make_kernel, motion_kernel
from .fourier import SubsampledFourier, sampling_mask
from .mask import Mask, random_mask
from .noise import GaussianNoise, PoissonNoise, TransmissionPoissonNoise, make_noise
from .radon import FBP_FILTERS, Radon, fbp, fbp_filter
from .sinogram_filter import SinogramFilter
from .registry import OPERATOR_CASES, OPERATOR_NAMES, make_operator

__all__ += [
    "Blur", "gaussian_kernel", "box_kernel", "motion_kernel", "make_kernel",
    "SubsampledFourier", "sampling_mask", "Mask", "random_mask",
    "GaussianNoise", "PoissonNoise", "TransmissionPoissonNoise", "make_noise",
    "Radon", "fbp", "fbp_filter", "FBP_FILTERS", "SinogramFilter",
    "make_operator", "OPERATOR_NAMES", "OPERATOR_CASES",
]
