"""Image quality metrics with an explicit data range (never guessed from the data).

Shapes: ``(B, C, H, W)`` gives one value per sample, shape ``(B,)``; a single image ``(C, H, W)``
or ``(H, W)`` gives a 0-d tensor. ``reduction="mean"`` averages over the batch.

Two conventions of the field for the data range ``R``: fixed, ``R = 1`` for images in [0, 1]
(``psnr``, ``ssim`` in the jobs' metrics), and per image ``R_b = max(ref_b) - min(ref_b)`` (the
convention of dival and LION, :func:`gt_range`; ``psnr_gt_range``, ``ssim_gt_range``).
:func:`quality` gives all four per sample.
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
    single = x.ndim < 4
    if isinstance(data_range, torch.Tensor):
        batch = 1 if single else x.shape[0]
        if data_range.shape not in ((), (batch,)) or not bool(torch.isfinite(data_range).all()) \
                or not bool((data_range > 0).all()):
            raise ValueError(f"data_range: expected positive finite values, a scalar or shape ({batch},), "
                             f"got {data_range.tolist()}")
    elif isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0 \
            or not math.isfinite(data_range):
        raise ValueError(f"data_range: expected a positive finite number, got {data_range!r}")
    while x.ndim < 4:
        x, ref = x.unsqueeze(0), ref.unsqueeze(0)
    dtype = torch.promote_types(torch.promote_types(x.dtype, ref.dtype), torch.float32)
    return x.to(dtype), ref.to(dtype), single


def _range(data_range, like: torch.Tensor):
    """A float as is; a tensor as (B,) or () in ``like``'s dtype and device."""
    if isinstance(data_range, torch.Tensor):
        return data_range.to(dtype=like.dtype, device=like.device).reshape(-1)
    return data_range


def _reduce(values: torch.Tensor, single: bool, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction != "none":
        raise ValueError(f"reduction: expected 'none' or 'mean', got {reduction!r}")
    return values[0] if single else values


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float | torch.Tensor,
         reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(R^2 / mean((x - ref)^2))`` in dB, per sample.

    ``R = data_range``: a number (e.g. 1.0 for images in [0, 1]) or one per sample, shape (B,)
    (e.g. :func:`gt_range`). Identical images give ``inf``.
    """
    x, ref, single = _prepare(x, ref, data_range)
    mse = ((x - ref) ** 2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(_range(data_range, mse) ** 2 / mse)
    return _reduce(values, single, reduction)


def _gaussian_window(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    # the same taps as scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5)
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float | torch.Tensor, reduction: str = "none",
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5).

    Local means/variances ``mu, s^2, s_xy`` under the window; per pixel
    ``S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; the result is the mean of ``S`` over the pixels whose
    window lies inside the image, and over channels. Equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R)`` (tested to 1e-4). ``R``: a number or one per
    sample, shape (B,). Needs H, W >= 11.
    """
    x, ref, single = _prepare(x, ref, data_range)
    _, c, h, w = x.shape
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
    r = _range(data_range, x)
    if isinstance(r, torch.Tensor):
        r = r.reshape(-1, 1, 1, 1)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return _reduce(s.flatten(1).mean(dim=1), single, reduction)


def gt_range(ref: torch.Tensor) -> torch.Tensor:
    """Per-image data range ``max(ref_b) - min(ref_b)`` of a batch ``(B, ...)``, shape (B,)."""
    flat = ref.flatten(1)
    return flat.amax(dim=1) - flat.amin(dim=1)


def quality(x: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR and SSIM of a batch ``x`` against ``ref`` (both ``(B, C, H, W)``) in both conventions
    of the module docstring, each of shape (B,): ``psnr``, ``ssim`` (``R = 1``) and
    ``psnr_gt_range``, ``ssim_gt_range`` (``R_b = max(ref_b) - min(ref_b)``; ``ValueError`` for a
    constant reference image)."""
    if x.ndim != 4:
        raise ValueError(f"x: expected (B, C, H, W), got shape {tuple(x.shape)}")
    r = gt_range(ref.to(torch.promote_types(ref.dtype, torch.float32)))
    if not bool((r > 0).all()):
        raise ValueError("ground_truth: a constant image has no data range max - min")
    return {"psnr": psnr(x, ref, 1.0), "ssim": ssim(x, ref, 1.0),
            "psnr_gt_range": psnr(x, ref, r), "ssim_gt_range": ssim(x, ref, r)}
