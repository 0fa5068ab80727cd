"""Stable inversion of pre-trained networks: lifted Bregman solvers, gradient baseline, parameter
choice, models to invert (method §5)."""
from .baseline import invert_gradient, smoothed_regularizer
from .checkpoint import load_checkpoint, save_checkpoint
from .deep import LiftedChain, continuation, invert, invert_deep, network_output
from .layers import AffineStage, Residual, ResidualStage, describe, forward_states
from .parameter_choice import DiscrepancyResult, a_priori_alpha, discrepancy_principle
from .noise import bregman_noise, relative_delta
from .regularizers import L1, REGULARIZERS, Regularizer, Tikhonov, TotalVariation, make_regularizer
from .result import InversionResult
from .single_layer import bregman_error, invert_single_layer

__all__ = [
    "invert", "invert_single_layer", "invert_deep", "invert_gradient", "bregman_error",
    "LiftedChain", "network_output", "describe", "forward_states", "AffineStage", "ResidualStage",
    "Residual", "bregman_noise", "relative_delta", "Regularizer", "TotalVariation", "Tikhonov", "L1",
    "REGULARIZERS", "make_regularizer", "InversionResult", "smoothed_regularizer",
    "save_checkpoint", "load_checkpoint", "a_priori_alpha", "discrepancy_principle",
    "DiscrepancyResult", "continuation",
]
