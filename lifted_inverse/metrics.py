"""Image quality metrics with an explicit data range (never guessed from the data).

Shapes: ``(B, C, H, W)`` gives one value per sample, shape ``(B,)``; a single image ``(C, H, W)``
or ``(H, W)`` gives a 0-d tensor. ``reduction="mean"`` averages over the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _prepare(x: torch.Tensor, ref: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise TypeError("x, ref: expected torch tensors")
    if x.shape != ref.shape:
        raise ValueError(f"x: shape {tuple(x.shape)} differs from ref shape {tuple(ref.shape)}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x: expected (H, W), (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0 \
            or not math.isfinite(data_range):
        raise ValueError(f"data_range: expected a positive finite number, got {data_range!r}")
    single = x.ndim < 4
    while x.ndim < 4:
        x, ref = x.unsqueeze(0), ref.unsqueeze(0)
    dtype = torch.promote_types(torch.promote_types(x.dtype, ref.dtype), torch.float32)
    return x.to(dtype), ref.to(dtype), single


def _reduce(values: torch.Tensor, single: bool, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction != "none":
        raise ValueError(f"reduction: expected 'none' or 'mean', got {reduction!r}")
    return values[0] if single else values


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float, reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(R^2 / mean((x - ref)^2))`` in dB, per sample.

    ``R = data_range`` (e.g. 1.0 for images in [0, 1]). Identical images give ``inf``.
    """
    x, ref, single = _prepare(x, ref, data_range)
    mse = ((x - ref) ** 2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(data_range ** 2 / mse)
    return _reduce(values, single, reduction)


def _gaussian_window(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    # the same taps as scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5)
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float, reduction: str = "none",
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5).

    Local means/variances ``mu, s^2, s_xy`` under the window; per pixel
    ``S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; the result is the mean of ``S`` over the pixels whose
    window lies inside the image, and over channels. Equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R)`` (tested to 1e-4). Needs H, W >= 11.
    """
    x, ref, single = _prepare(x, ref, data_range)
    b, c, h, w = x.shape
    win = _gaussian_window(sigma, 3.5, x.dtype, x.device)
    n = win.numel()
    if h < n or w < n:
        raise ValueError(f"x: SSIM needs images of at least {n}x{n} pixels, got {h}x{w}")
    kh = win.view(1, 1, n, 1).expand(c, 1, n, 1)
    kw = win.view(1, 1, 1, n).expand(c, 1, 1, n)

    def filt(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter per channel
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mx, my = filt(x), filt(ref)
    sxx = filt(x * x) - mx * mx
    syy = filt(ref * ref) - my * my
    sxy = filt(x * ref) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return _reduce(s.flatten(1).mean(dim=1), single, reduction)
