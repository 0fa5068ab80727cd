"""Operators by name (for the CLI and experiments) and the small test cases of every operator.

``make_operator(name, image_shape, **options)`` with defaults:

* ``'denoise'``: :class:`Identity`.
* ``'blur'``: :class:`Blur`, Gaussian 9x9, σ = 1.5, circular boundary
  (options: ``kernel``, ``boundary``).
* ``'ct'``: :class:`Radon` with 60 angles in ``[0, π)`` (the sparse-view setting of the
  acceptance tests), ``max(H, W)`` detectors, ``method='auto'``; the image must have one channel
  (options: every :class:`Radon` argument).
* ``'inpaint'``: :class:`Mask` keeping 50% of the pixels at random (seed 0)
  (options: ``mask``, or ``keep`` and ``seed``).
* ``'mri'``: :class:`SubsampledFourier` with a seeded random mask, 4x acceleration, 8% fully
  sampled centre (options: ``mask``, or the :func:`sampling_mask` arguments).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .base import Identity, LinearOperator
from .blur import Blur, box_kernel, gaussian_kernel
from .fourier import SubsampledFourier, sampling_mask
from .gradient import Gradient
from .mask import Mask, random_mask
from .radon import Radon
from .sinogram_filter import SinogramFilter

__all__ = ["OPERATOR_CASES", "OPERATOR_NAMES", "make_operator"]

OPERATOR_NAMES = ("denoise", "blur", "ct", "inpaint", "mri")


def _shape(image_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError:
        raise ValueError(f"image_shape: expected (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape: expected (C, H, W) with positive sizes, got {image_shape!r}")
    return shape


def make_operator(name: str, image_shape: Sequence[int], **options) -> LinearOperator:
    """Build the forward operator ``name`` for images of ``image_shape = (C, H, W)``."""
    if name not in OPERATOR_NAMES:
        raise ValueError(f"name: unknown operator {name!r}; expected one of {', '.join(OPERATOR_NAMES)}")
    shape = _shape(image_shape)

    def reject_unknown(allowed):
        extra = sorted(set(options) - set(allowed))
        if extra:
            raise ValueError(f"options: {extra} not accepted by operator {name!r} (accepted: {sorted(allowed)})")

    if name == "denoise":
        reject_unknown(())
        return Identity(shape)
    if name == "blur":
        reject_unknown(("kernel", "boundary"))
        return Blur(shape, options.get("kernel", gaussian_kernel(9, 1.5)), options.get("boundary", "circular"))
    if name == "ct":
        reject_unknown(("n_angles", "angles", "n_detectors", "angle_range", "method", "disk_cache", "model"))
        if shape[0] != 1:
            raise ValueError(f"image_shape: the 'ct' operator takes one channel, got {shape}")
        opts = {"n_angles": 60, **options}
        return Radon(shape[1:], **opts)
    if name == "inpaint":
        reject_unknown(("mask", "keep", "seed"))
        mask = options.get("mask")
        if mask is None:
            mask = random_mask(shape[1:], options.get("keep", 0.5), options.get("seed", 0))
        return Mask(shape, mask)
    reject_unknown(("mask", "kind", "acceleration", "center_fraction", "seed"))
    mask = options.pop("mask", None)
    if mask is None:
        mask = sampling_mask(shape[1:], **options)
    return SubsampledFourier(shape, mask)


def _cases() -> list[tuple[str, Callable[[], LinearOperator]]]:
    """Small instances of every operator and variant, for the parametrised operator tests."""
    s12 = (1, 12, 12)
    s2 = (2, 9, 10)
    return [
        ("identity", lambda: Identity(s2)),
        ("gradient", lambda: Gradient(s2)),
        ("blur-circular-gauss", lambda: Blur(s2, gaussian_kernel((3, 5), (0.8, 1.3)), "circular")),
        ("blur-circular-even", lambda: Blur(s2, gaussian_kernel((4, 2), 1.0), "circular")),
        ("blur-zero-odd", lambda: Blur(s2, gaussian_kernel((5, 3), 1.0), "zero")),
        ("blur-zero-even-asym", lambda: Blur(s2, _asym_kernel(), "zero")),
        ("blur-zero-motion", lambda: Blur(s12, "motion", "zero")),
        ("radon-sparse", lambda: Radon(12, n_angles=10, method="sparse")),
        ("radon-matrix-free", lambda: Radon(12, n_angles=10, method="matrix_free")),
        ("radon-limited-rect", lambda: Radon((9, 12), n_angles=7, angle_range=(0, 2 * math.pi / 3),
                                             n_detectors=15, method="sparse")),
        ("radon-mf-rect", lambda: Radon((9, 12), angles=[0.1, 0.7, 1.9, 2.8], n_detectors=14,
                                        method="matrix_free")),
        ("radon-bilinear-sparse", lambda: Radon((9, 12), n_angles=8, method="sparse", model="bilinear")),
        ("radon-bilinear-mf", lambda: Radon(12, n_angles=6, n_detectors=15, method="matrix_free",
                                            model="bilinear")),
        ("sinogram-ramp-sqrt", lambda: SinogramFilter((1, 5, 13))),
        ("sinogram-hann", lambda: SinogramFilter((1, 4, 8), "hann", power=1.0, frequency_scaling=0.8)),
        ("radon-ramp-weighted", lambda: SinogramFilter((1, 8, 12)) @ Radon(12, n_angles=8, method="sparse")),
        ("mask", lambda: Mask(s2, random_mask((9, 10), 0.6, seed=1))),
        ("fourier-random", lambda: SubsampledFourier(s2, sampling_mask((9, 10), "random", 2.0, seed=2))),
        ("fourier-radial", lambda: SubsampledFourier(s12, sampling_mask((12, 12), "radial", 3.0, seed=3))),
        ("blur-composed-mask", lambda: Mask(s2, random_mask((9, 10), 0.5, seed=4)) @ Blur(s2, "box", "zero")),
        ("radon-composed-blur", lambda: Radon(12, n_angles=8, method="sparse") @ Blur(s12, "gaussian", "circular")),
        ("sum-blur-identity", lambda: Blur(s2, box_kernel((2, 3)), "circular") + 0.5 * Identity(s2)),
        ("adjoint-of-radon", lambda: Radon(12, n_angles=6, method="matrix_free").T),
        ("difference-gradient-normal", lambda: Gradient(s2).T @ Gradient(s2) - Identity(s2)),
    ]


def _asym_kernel() -> torch.Tensor:
    """A 4x2 kernel with no symmetry (and a negative entry): catches flipped/shifted adjoints."""
    return torch.tensor([[0.1, 0.3], [0.0, 0.2], [0.25, 0.15], [0.05, -0.05]], dtype=torch.float64)


OPERATOR_CASES: list[tuple[str, Callable[[], LinearOperator]]] = _cases()
