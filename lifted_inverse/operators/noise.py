"""Seeded noise models ``y -> y^δ`` for simulated measurements.

Each model is a callable on a tensor of shape ``(B, ...)`` (any device, float32/float64) with its
own ``torch.Generator`` (CPU, so a seed gives the same numbers on every device); calling it
again continues the stream, ``reset()`` restarts it. ``to_dict()`` lists the parameters, for
provenance attributes in HDF5 files.

The low-dose CT pipeline is also available as functions (:func:`transmission_counts`,
:func:`log_transform`, :func:`simulate_transmission`) with the penalised-weighted-least-squares
weights :func:`pwls_weights` of the post-log data (derivation in :func:`pwls_weights`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["NOISE_NAMES", "GaussianNoise", "PoissonNoise", "TransmissionData", "TransmissionPoissonNoise",
           "log_transform", "make_noise", "pwls_weights", "simulate_transmission", "transmission_counts"]

NOISE_NAMES = ("gaussian", "poisson", "transmission")


def _nonneg(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a non-negative finite number, got {value!r}")
    return v


def _positive(value, name: str) -> float:
    v = _nonneg(value, name)
    if v == 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return v


def _check_input(y: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y: expected a floating-point torch.Tensor, got {type(y).__name__}")
    if y.ndim < 1:
        raise ValueError("y: expected a batched tensor of shape (B, ...)")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y: contains NaN or Inf values")


class _SeededNoise:
    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Restart the random stream at ``seed``."""
        self.generator = torch.Generator().manual_seed(self.seed)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "model")
        return f"{type(self).__name__}({args})"


class GaussianNoise(_SeededNoise):
    """``y^δ = y + σ_b e``, ``e ~ N(0, I)``; ``σ_b = sigma`` or, if ``relative``,
    ``σ_b = sigma · rms(y_b)`` per sample ``b`` (so ``sigma=0.01, relative=True`` is 1% noise)."""

    def __init__(self, sigma: float, relative: bool = False, seed: int = 0):
        self.sigma = _nonneg(sigma, "sigma")
        self.relative = bool(relative)
        super().__init__(seed)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y)
        e = torch.randn(y.shape, generator=self.generator, dtype=y.dtype).to(y.device)
        if self.relative:
            rms = y.detach().flatten(1).pow(2).mean(dim=1).sqrt() if y.ndim > 1 else y.detach().abs()
            std = self.sigma * rms.reshape(-1, *([1] * (y.ndim - 1)))
        else:
            std = self.sigma
        return y + std * e

    def to_dict(self) -> dict:
        return {"model": "gaussian", "sigma": self.sigma, "relative": self.relative, "seed": self.seed}


class PoissonNoise(_SeededNoise):
    """``y^δ = Poisson(N y) / N`` with ``N = photons`` (mean ``y``, variance ``y/N``); ``y >= 0``."""

    def __init__(self, photons: float, seed: int = 0):
        self.photons = _positive(photons, "photons")
        super().__init__(seed)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y)
        if bool((y < 0).any()):
            raise ValueError(f"y: Poisson noise needs non-negative data, got minimum {float(y.min()):.3g}")
        rate = (self.photons * y.detach()).to(torch.float64).cpu()
        counts = torch.poisson(rate, generator=self.generator)
        return (counts / self.photons).to(dtype=y.dtype, device=y.device)

    def to_dict(self) -> dict:
        return {"model": "poisson", "photons": self.photons, "seed": self.seed}


class TransmissionData(NamedTuple):
    """Both stages of a simulated transmission measurement, same shape, dtype and device:
    ``counts`` (pre-log detector counts, integers held as floats) and ``line_integrals``
    (post-log data ``-log(max(counts, min_count) / I_0) / μ``)."""

    counts: torch.Tensor
    line_integrals: torch.Tensor


def transmission_counts(line_integrals: torch.Tensor, photons: float, attenuation: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Detector counts ``n ~ Poisson(I_0 exp(-μ p))`` for line integrals ``p`` (any shape).

    ``I_0 = photons`` is the incident photon count per detector bin (blank scan) and
    ``μ = attenuation`` converts the projector's line integrals to optical depth (e.g. an
    attenuation coefficient per length unit, when ``p`` is in length units). Drawn in float64 on
    the CPU from ``generator`` (so a seed gives the same counts on every device) and returned in
    ``p``'s dtype and device: float32 holds counts exactly up to ``2^24``."""
    _check_input(line_integrals)
    i0, mu = _positive(photons, "photons"), _positive(attenuation, "attenuation")
    rate = i0 * torch.exp(-mu * line_integrals.detach().to(torch.float64).cpu())
    counts = torch.poisson(rate, generator=generator)
    return counts.to(dtype=line_integrals.dtype, device=line_integrals.device)


def log_transform(counts: torch.Tensor, photons: float, attenuation: float = 1.0,
                  min_count: float = 1.0) -> torch.Tensor:
    """Post-log line integrals ``p̂ = -log(max(n, min_count) / I_0) / μ`` from counts ``n``.

    Zero counts (photon starvation) have no logarithm; they are read as ``min_count`` (> 0), which
    caps ``p̂`` at ``log(I_0 / min_count) / μ``. Their PWLS weight (:func:`pwls_weights`) is 0, so a
    weighted data term ignores them. Same shape, dtype and device as ``counts``."""
    if not isinstance(counts, torch.Tensor) or not counts.is_floating_point():
        raise TypeError(f"counts: expected a floating-point torch.Tensor, got {type(counts).__name__}")
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError("counts: expected finite non-negative values")
    i0, mu = _positive(photons, "photons"), _positive(attenuation, "attenuation")
    floor = _positive(min_count, "min_count")
    return -torch.log(counts.clamp_min(floor) / i0) / mu


def simulate_transmission(line_integrals: torch.Tensor, photons: float, attenuation: float = 1.0,
                          seed: int | None = None, generator: torch.Generator | None = None,
                          min_count: float = 1.0) -> TransmissionData:
    """:func:`transmission_counts` then :func:`log_transform`: both stages of a low-dose CT
    measurement of the noise-free line integrals ``p`` (e.g. ``Radon(x)``), for storage.

    The random stream is ``generator`` or, if not given, a fresh one seeded with ``seed``
    (default 0); give one or neither."""
    if generator is not None and seed is not None:
        raise ValueError("seed: give a seed or a generator, not both")
    if generator is None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    counts = transmission_counts(line_integrals, photons, attenuation, generator)
    return TransmissionData(counts, log_transform(counts, photons, attenuation, min_count))


def pwls_weights(counts: torch.Tensor, attenuation: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Penalised-weighted-least-squares weights ``w_i = μ² n_i`` of the post-log data.

    For ``n ~ Poisson(λ)``, ``λ = I_0 exp(-μ p)``, the delta method gives ``p̂ = -log(n / I_0) / μ``
    mean ``p + 1/(2 μ λ)`` and variance ``1/(μ² λ)`` (to leading order in ``1/λ``); estimating
    ``λ`` by ``n`` gives inverse-variance weights ``w = μ² n``, and the data term
    ``½ ‖√w ⊙ (A x - p̂)‖²`` is the second-order expansion of the Poisson negative log-likelihood
    about ``p̂`` (the standard PWLS data term). Zero counts get weight 0 (no information).
    ``normalize``: divide by the mean weight of each sample (axis 0 is the batch), so the weighted
    term has the scale of the unweighted ``½ ‖A x - p̂‖²`` (regularisation weights carry over).
    Same shape, dtype and device as ``counts``."""
    if not isinstance(counts, torch.Tensor) or not counts.is_floating_point():
        raise TypeError(f"counts: expected a floating-point torch.Tensor, got {type(counts).__name__}")
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError("counts: expected finite non-negative values")
    w = _positive(attenuation, "attenuation") ** 2 * counts
    if normalize:
        if counts.ndim < 1:
            raise ValueError("counts: normalize needs a batched tensor of shape (B, ...)")
        mean = w.reshape(w.shape[0], -1).mean(dim=1).reshape(-1, *([1] * (w.ndim - 1)))
        if bool((mean == 0).any()):
            raise ValueError("counts: a sample has no counts at all; cannot normalize its weights")
        w = w / mean
    return w


class TransmissionPoissonNoise(_SeededNoise):
    """CT transmission noise on line integrals ``y``: counts ``n ~ Poisson(I_0 exp(-μ y))``,
    ``y^δ = -log(max(n, min_count) / I_0) / μ`` with ``I_0 = photons`` (incident photons per
    detector bin) and ``μ = attenuation`` (:func:`transmission_counts`, :func:`log_transform`).
    ``simulate(y)`` returns the counts as well (:class:`TransmissionData`)."""

    def __init__(self, photons: float, seed: int = 0, attenuation: float = 1.0, min_count: float = 1.0):
        self.photons = _positive(photons, "photons")
        self.attenuation = _positive(attenuation, "attenuation")
        self.min_count = _positive(min_count, "min_count")
        super().__init__(seed)

    def simulate(self, y: torch.Tensor) -> TransmissionData:
        """Counts and post-log data of ``y`` (continues this model's random stream)."""
        counts = transmission_counts(y, self.photons, self.attenuation, self.generator)
        return TransmissionData(counts, log_transform(counts, self.photons, self.attenuation, self.min_count))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.simulate(y).line_integrals

    def to_dict(self) -> dict:
        out = {"model": "transmission", "photons": self.photons, "seed": self.seed}
        if self.attenuation != 1.0 or self.min_count != 1.0:  # defaults omitted: one record per default model
            out.update(attenuation=self.attenuation, min_count=self.min_count)
        return out


def make_noise(name: str, level: float, seed: int = 0, relative: bool = False):
    """``'gaussian'`` (``level`` = σ), ``'poisson'`` / ``'transmission'`` (``level`` = photons)."""
    if name == "gaussian":
        return GaussianNoise(level, relative=relative, seed=seed)
    if name == "poisson":
        return PoissonNoise(level, seed=seed)
    if name == "transmission":
        return TransmissionPoissonNoise(level, seed=seed)
    raise ValueError(f"name: unknown noise model {name!r}; expected one of {', '.join(NOISE_NAMES)}")
