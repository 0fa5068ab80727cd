"""Stable inversion of pre-trained networks: lifted Bregman solvers, gradient baseline, parameter
choice, models to invert (method §5)."""
from .baseline import invert_gradient, smoothed_regularizer
from .checkpoint import load_checkpoint, save_checkpoint
from .deep import LiftedChain, continuation, invert, invert_deep, network_output
from .layers import AffineStage, Residual, ResidualStage, describe, forward_states
from .noise import bregman_noise, relative_delta
from .parameter_choice import DiscrepancyResult, a_priori_alpha, discrepancy_principle
from .regularizers import L1, REGULARIZERS, Regularizer, Tikhonov, TotalVariation, make_regularizer
from .result import InversionResult
from .single_layer import bregman_error, invert_single_layer

__all__ = [
    "L1",
    "REGULARIZERS",
    "AffineStage",
    "DiscrepancyResult",
    "InversionResult",
    "LiftedChain",
    "Regularizer",
    "Residual",
    "ResidualStage",
    "Tikhonov",
    "TotalVariation",
    "a_priori_alpha",
    "bregman_error",
    "bregman_noise",
    "continuation",
    "describe",
    "discrepancy_principle",
    "forward_states",
    "invert",
    "invert_deep",
    "invert_gradient",
    "invert_single_layer",
    "load_checkpoint",
    "make_regularizer",
    "network_output",
    "relative_delta",
    "save_checkpoint",
    "smoothed_regularizer",
]
