"""Stable inversion of pre-trained networks: lifted Bregman solvers, gradient baseline, parameter
choice, models to invert (method §5). The lifted solvers are a thin layer over
:mod:`lifted_inverse.lifted.inverse` (the model described by :func:`lifted_inverse.lifted.lift`)."""
from .baseline import invert_gradient, smoothed_regularizer
from .deep import continuation, invert, invert_deep, network_output
from .noise import bregman_noise, relative_delta
from .parameter_choice import DiscrepancyResult, a_priori_alpha, discrepancy_principle
from .regularizers import L1, REGULARIZERS, Regularizer, Tikhonov, TotalVariation, make_regularizer
from .result import InversionResult
from .single_layer import (
    SourcePair,
    bregman_error,
    invert_single_layer,
    rate_bound,
    source_condition_pair,
)

__all__ = [
    "L1",
    "REGULARIZERS",
    "DiscrepancyResult",
    "InversionResult",
    "Regularizer",
    "SourcePair",
    "Tikhonov",
    "TotalVariation",
    "a_priori_alpha",
    "bregman_error",
    "bregman_noise",
    "continuation",
    "discrepancy_principle",
    "invert",
    "invert_deep",
    "invert_gradient",
    "invert_single_layer",
    "make_regularizer",
    "network_output",
    "rate_bound",
    "relative_delta",
    "smoothed_regularizer",
    "source_condition_pair",
]
