"""Filtering of sinograms along the detector axis: the FBP filter as a linear operator.

``(H^p y)[a, :] = crop_D( F⁻¹( ĥ(ν)^p · F(pad_n(y[a, :])) ) )`` for each angle ``a``: zero
padding of the ``D`` detector bins to ``n`` (a power of two >= 2D), multiplication of the DFT by
the FBP filter response ``ĥ`` (:func:`fbp_filter`, real, even and >= 0) raised to the power
``p``, inverse DFT and cropping back to ``D`` bins. The kernel is real and symmetric, so the
operator is self-adjoint and positive semi-definite: ``crop ∘ C ∘ pad``, ``C`` a symmetric
circulant.

``p = 1/2`` gives the weight of the ramp-weighted least-squares fidelity
``½‖H^{1/2}(R x − y)‖² = ½⟨R x − y, H (R x − y)⟩`` (up to the crop between the two halves),
whose gradient ``R^T H^{1/2} H^{1/2}(R x − y)`` is a filtered backprojection of the residual:
gradient steps on it are preconditioned (``Δθ R^T H R ≈ I`` on the sampled frequencies) and
reach data consistency in a few steps where plain Landweber ``x − γ R^T(R x − y)`` needs hundreds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import LinearOperator

__all__ = ["FBP_FILTERS", "SinogramFilter", "fbp_filter", "padded_length"]

FBP_FILTERS = ("ramp", "shepp-logan", "hann", "cosine")


def padded_length(n_detectors: int) -> int:
    """FFT length: a power of two >= 2D (>= 64): the circular convolution acts as a linear one."""
    return max(64, 1 << math.ceil(math.log2(2 * n_detectors)))


def fbp_filter(n: int, filter: str = "ramp", frequency_scaling: float = 1.0, dtype=torch.float64,
               device=None) -> torch.Tensor:
    """Frequency response (length ``n//2 + 1``, for ``rfft`` of length ``n``) of the FBP filter.

    ``H(ν) = R(ν) W(ν/ν_c)`` for ``ν = k/n`` cycles per sample, ``ν_c = frequency_scaling/2``,
    where
    ``R`` is the DFT of the band-limited ramp kernel ``h[0] = 1/4``, ``h[k odd] = -1/(πk)²``
    (``R(ν) ≈ |ν|``) and the window ``W(u)`` is 1 (ramp), ``sinc(u/2)`` (shepp-logan),
    ``cos(πu/2)`` (cosine) or ``(1 + cos(πu))/2`` (hann), and 0 for ``|u| > 1``.
    """
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter: expected one of {FBP_FILTERS}, got {filter!r}")
    if not (isinstance(frequency_scaling, (int, float)) and 0 < frequency_scaling <= 1):
        raise ValueError("frequency_scaling: expected a number in (0, 1], "
                         f"got {frequency_scaling!r}")
    k = np.concatenate((np.arange(0, n // 2 + 1), np.arange(-(n - n // 2 - 1), 0)))
    kernel = np.zeros(n)
    kernel[0] = 0.25
    odd = k % 2 == 1
    kernel[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.real(np.fft.rfft(kernel))
    u = np.fft.rfftfreq(n) / (0.5 * frequency_scaling)
    if filter == "ramp":
        window = np.ones_like(u)
    elif filter == "shepp-logan":
        window = np.sinc(u / 2)
    elif filter == "cosine":
        window = np.cos(np.pi * u / 2)
    else:
        window = 0.5 * (1 + np.cos(np.pi * u))
    window[u > 1] = 0.0
    return torch.as_tensor(ramp * window, dtype=dtype, device=device)


class SinogramFilter(LinearOperator):
    """``H^p`` on sinograms of shape ``(1, A, D)`` (see the module docstring); self-adjoint, PSD.

    Args:
        sinogram_shape: ``(1, A, D)`` (a :class:`~.radon.Radon`'s ``out_shape``).
        filter: one of :data:`FBP_FILTERS`.
        power: ``p > 0`` (``0.5``: the square root of the filter).
        frequency_scaling: as in :func:`fbp_filter`.
    """

    def __init__(self, sinogram_shape: Sequence[int], filter: str = "ramp", power: float = 0.5,
                 frequency_scaling: float = 1.0):
        shape = tuple(int(s) for s in sinogram_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError("sinogram_shape: expected (1, A, D) with positive sizes, "
                             f"got {sinogram_shape!r}")
        if filter not in FBP_FILTERS:
            raise ValueError(f"filter: expected one of {FBP_FILTERS}, got {filter!r}")
        if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
            raise ValueError(f"power: expected a finite number > 0, got {power!r}")
        super().__init__(shape, shape)
        d = shape[-1]
        self.n_fft = padded_length(d)
        response = fbp_filter(self.n_fft, filter, frequency_scaling).clamp_min(0.0) ** float(power)
        self.register_buffer("response", response)
        self.filter, self.power = filter, float(power)

    def _apply(self, y: torch.Tensor) -> torch.Tensor:
        d = y.shape[-1]
        response = self.response.to(device=y.device, dtype=y.dtype)
        spec = torch.fft.rfft(y, n=self.n_fft, dim=-1) * response
        return torch.fft.irfft(spec, n=self.n_fft, dim=-1)[..., :d]

    def _forward(self, y):
        return self._apply(y)

    def _adjoint(self, y):
        return self._apply(y)

    def extra_repr(self) -> str:
        return f"sinogram_shape={self.in_shape}, filter={self.filter!r}, power={self.power}"
