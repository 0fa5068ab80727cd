"""Seeded noise models ``y -> y^δ`` for simulated measurements.

Each model is a callable on a tensor of shape ``(B, ...)`` (any device, float32/float64) with its
own ``torch.Generator`` (CPU, so a seed gives the same numbers on every device); calling it
again continues the stream, ``reset()`` restarts it. ``to_dict()`` lists the parameters, for
provenance attributes in HDF5 files.
"""
from __future__ import annotations

import math

import torch

__all__ = ["NOISE_NAMES", "GaussianNoise", "PoissonNoise", "TransmissionPoissonNoise", "make_noise"]

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


class TransmissionPoissonNoise(_SeededNoise):
    """CT transmission noise on line integrals ``y``: counts ``n ~ Poisson(I_0 exp(-y))``,
    ``y^δ = -log(max(n, 1) / I_0)`` with ``I_0 = photons`` (incident photons per detector bin)."""

    def __init__(self, photons: float, seed: int = 0):
        self.photons = _positive(photons, "photons")
        super().__init__(seed)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        _check_input(y)
        rate = self.photons * torch.exp(-y.detach().to(torch.float64).cpu())
        counts = torch.poisson(rate, generator=self.generator).clamp_min(1.0)
        return (-torch.log(counts / self.photons)).to(dtype=y.dtype, device=y.device)

    def to_dict(self) -> dict:
        return {"model": "transmission", "photons": self.photons, "seed": self.seed}


def make_noise(name: str, level: float, seed: int = 0, relative: bool = False):
    """``'gaussian'`` (``level`` = σ), ``'poisson'`` / ``'transmission'`` (``level`` = photons)."""
    if name == "gaussian":
        return GaussianNoise(level, relative=relative, seed=seed)
    if name == "poisson":
        return PoissonNoise(level, seed=seed)
    if name == "transmission":
        return TransmissionPoissonNoise(level, seed=seed)
    raise ValueError(f"name: unknown noise model {name!r}; expected one of {', '.join(NOISE_NAMES)}")
