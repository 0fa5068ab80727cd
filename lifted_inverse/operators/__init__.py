"""Forward operators: batched torch linear maps with exact adjoints."""
from .base import (
    Adjoint,
    Composition,
    Identity,
    LinearOperator,
    Scaled,
    Sum,
    check_batch,
    check_finite,
    check_image_shape,
)
from .gradient import Gradient

__all__ = [
    "Adjoint",
    "Composition",
    "Gradient",
    "Identity",
    "LinearOperator",
    "Scaled",
    "Sum",
    "check_batch",
    "check_finite",
    "check_image_shape",
]
from .blur import Blur, box_kernel, gaussian_kernel, make_kernel, motion_kernel
from .fourier import SubsampledFourier, sampling_mask
from .geometry import FanBeamGeometry, ParallelBeamGeometry
from .mask import Mask, random_mask
from .noise import (
    GaussianNoise,
    PoissonNoise,
    TransmissionData,
    TransmissionPoissonNoise,
    log_transform,
    make_noise,
    pwls_weights,
    simulate_transmission,
    transmission_counts,
)
from .radon import FBP_FILTERS, Radon, diagonal_detectors, fbp, fbp_filter
from .registry import (
    OPERATOR_CASES,
    OPERATOR_NAMES,
    make_operator,
    operator_from_spec,
    resolve_spec,
    spec_of,
)
from .scanners import SCANNER_NAMES, scanner_spec
from .sinogram_filter import SinogramFilter

__all__ += [
    "FBP_FILTERS",
    "OPERATOR_CASES",
    "OPERATOR_NAMES",
    "Blur",
    "FanBeamGeometry",
    "GaussianNoise",
    "Mask",
    "ParallelBeamGeometry",
    "PoissonNoise",
    "Radon",
    "SinogramFilter",
    "SubsampledFourier",
    "SCANNER_NAMES",
    "TransmissionData",
    "TransmissionPoissonNoise",
    "log_transform",
    "pwls_weights",
    "scanner_spec",
    "simulate_transmission",
    "transmission_counts",
    "box_kernel",
    "diagonal_detectors",
    "fbp",
    "fbp_filter",
    "gaussian_kernel",
    "make_kernel",
    "make_noise",
    "make_operator",
    "motion_kernel",
    "operator_from_spec",
    "random_mask",
    "resolve_spec",
    "sampling_mask",
    "spec_of",
]
