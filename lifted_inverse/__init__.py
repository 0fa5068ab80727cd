"""lifted_inverse: inverse-problems imaging with lifted Bregman training and inversion.

The main entry points are available from the package itself, imported on first use (so
``import lifted_inverse`` stays fast and loads neither torch nor scikit-image)::

    import lifted_inverse as li
    A = li.Radon(128, n_angles=60)                  # or li.make_operator("ct", (1, 128, 128))
    x = li.tv_pdhg(A, y, alpha=0.01).x
    A2 = li.operator_from_spec(record)              # the operator an output file describes

Submodules: ``operators``, ``reconstruction``, ``lifted``, ``networks``, ``training``,
``inversion``, ``datasets``, ``metrics``, ``plotting``, ``io``, ``runtime``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: exported name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(("LinearOperator", "Identity", "Blur", "Radon", "Mask", "SubsampledFourier", "Gradient",
                     "SinogramFilter", "GaussianNoise", "PoissonNoise", "make_operator", "operator_from_spec",
                     "spec_of", "FanBeamGeometry", "ParallelBeamGeometry", "scanner_spec",
                     "simulate_transmission", "pwls_weights"), "operators"),
    **dict.fromkeys(("fbp", "tikhonov_cg", "tv_pdhg", "tv_denoise", "default_alpha", "SolverResult"),
                    "reconstruction"),
    **dict.fromkeys(("lift", "LiftedSolver", "unrolled_network"), "lifted"),
    **dict.fromkeys(("train", "make_task", "available_tasks", "TrainConfig", "TaskConfig"), "training"),
    **dict.fromkeys(("load_checkpoint", "save_checkpoint", "load_network", "Checkpoint"), "networks"),
    **dict.fromkeys(("invert", "invert_gradient", "discrepancy_principle", "bregman_noise"), "inversion"),
    **dict.fromkeys(("shepp_logan", "ellipse_phantom", "builtin_image", "load_image", "ImageFolder",
                     "MeasurementDataset", "make_measurements"), "datasets"),
    **dict.fromkeys(("psnr", "ssim"), "metrics"),
    **dict.fromkeys(("plot_reconstructions",), "plotting"),
}
_SUBMODULES = ("operators", "reconstruction", "lifted", "networks", "training", "inversion", "datasets",
               "metrics", "plotting", "io", "runtime", "linalg", "jobs", "cli")

__all__ = ["Blur", "Checkpoint", "FanBeamGeometry", "GaussianNoise", "Gradient", "Identity", "ImageFolder",
           "LiftedSolver", "LinearOperator", "Mask", "MeasurementDataset", "ParallelBeamGeometry",
           "PoissonNoise", "Radon",
           "SinogramFilter", "SolverResult", "SubsampledFourier", "TaskConfig", "TrainConfig",
           "__version__", "available_tasks", "bregman_noise", "builtin_image", "default_alpha",
           "discrepancy_principle", "ellipse_phantom", "fbp", "invert", "invert_gradient", "lift",
           "load_checkpoint", "load_image", "load_network", "make_measurements", "make_operator",
           "make_task", "operator_from_spec", "plot_reconstructions", "psnr", "pwls_weights",
           "save_checkpoint", "scanner_spec", "shepp_logan", "simulate_transmission", "spec_of", "ssim", "tikhonov_cg", "train", "tv_denoise", "tv_pdhg",
           "unrolled_network"]


def __getattr__(name: str):
    """Import the submodule of an exported name (or a submodule) on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
