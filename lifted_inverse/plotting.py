"""Matplotlib figures (Agg backend, files written atomically)."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path
from .metrics import psnr, ssim

_SUPERSCRIPT = re.compile(r"(?<![\w$\\])(\w)\^(\w)")


def math_title(text: str) -> str:
    """Plain-text superscripts as mathtext, so ``f^δ`` is drawn as f with a superscript δ rather
    than the characters ``f^δ`` (one-character base and exponent; text already in ``$…$``
    is left alone)."""
    if "$" in text:
        return text
    return _SUPERSCRIPT.sub(lambda m: f"${m.group(1)}^{{{m.group(2)}}}$", text)


def _as_image(t: torch.Tensor, name: str) -> torch.Tensor:
    """(H, W), (C, H, W) or (1, C, H, W) -> (C, H, W) on the CPU."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    t = t.detach().cpu()
    if t.is_complex():
        t = t.abs()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"{name}: expected (H, W), (C, H, W) or (1, C, H, W) with C in {{1, 3}}, "
                         f"got shape {tuple(t.shape)}")
    return t.float()


def _show(ax, img: torch.Tensor, vmin=None, vmax=None, colorbar=False, aspect=None):
    """``img`` (C, H, W) on ``ax``; ``aspect`` None: pixels square for square arrays, the panel
    filled otherwise (sinograms, folded vectors); ``"equal"`` keeps an image's proportions."""
    arr = img.numpy()
    if aspect is None:
        aspect = "auto" if arr.shape[1] != arr.shape[2] else "equal"
    if arr.shape[0] == 3:
        lo, hi = (vmin, vmax) if vmin is not None else (arr.min(), arr.max())
        arr = np.clip((np.moveaxis(arr, 0, -1) - lo) / max(hi - lo, 1e-12), 0, 1)
        handle = ax.imshow(arr)
    else:
        handle = ax.imshow(arr[0], cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(handle, ax=ax, fraction=0.046, pad=0.04)


def plot_reconstructions(
    ground_truth: torch.Tensor,
    measurement: torch.Tensor,
    reconstructions: Mapping[str, torch.Tensor],
    path: str | os.PathLike | None = None,
    data_range: float = 1.0,
    title: str | None = None,
):
    """One row: ground truth | measurement | each reconstruction, with PSNR/SSIM in the titles.

    Images are shown on the fixed scale ``[lo, lo + data_range]``, ``lo`` = 0 for a ground truth
    within ``[0, data_range]`` and its minimum otherwise (stored values such as Hounsfield units);
    a measurement whose shape differs
    from the ground truth (a sinogram, k-space) gets its own colour scale and a colour bar, and no
    metrics. Metrics use the explicit ``data_range``. Saves to ``path`` (atomically, PNG) when
    given; returns the matplotlib ``Figure``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    gt = _as_image(ground_truth, "ground_truth")
    meas = _as_image(measurement, "measurement") if measurement is not None else None
    recs = {str(k): _as_image(v, f"reconstructions[{k!r}]") for k, v in reconstructions.items()}
    for k, v in recs.items():
        if v.shape != gt.shape:
            raise ValueError(f"reconstructions[{k!r}]: shape {tuple(v.shape)} differs from "
                             f"ground_truth {tuple(gt.shape)}")
    panels = 1 + (meas is not None) + len(recs)
    fig = Figure(figsize=(3.2 * panels, 3.6), constrained_layout=True)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    def metrics(img: torch.Tensor) -> str:
        p = float(psnr(img, gt, data_range))
        try:
            s = f", SSIM {float(ssim(img, gt, data_range)):.3f}"
        except ValueError:  # image smaller than the SSIM window
            s = ""
        return f"PSNR {p:.2f} dB{s}"

    lo = float(gt.min())
    lo = 0.0 if lo >= 0.0 and float(gt.max()) <= data_range else lo
    hi = lo + data_range
    _show(axes[0], gt, lo, hi, aspect="equal")
    axes[0].set_title("ground truth")
    i = 1
    if meas is not None:
        if meas.shape == gt.shape:
            _show(axes[i], meas, lo, hi, aspect="equal")
            axes[i].set_title(f"measurement\n{metrics(meas)}")
        else:
            _show(axes[i], meas, colorbar=True)
            axes[i].set_title(f"measurement {tuple(meas.shape[1:])}")
        i += 1
    for name, img in recs.items():
        _show(axes[i], img, lo, hi, aspect="equal")
        axes[i].set_title(f"{math_title(name)}\n{metrics(img)}")
        i += 1
    return _finish(fig, title, path)


def _finish(fig, title: str | None, path: str | os.PathLike | None):
    """Give ``fig`` its ``title`` and save it to ``path`` (atomically; the format from the suffix,
    PNG by default) when given; returns ``fig``."""
    if title:
        fig.suptitle(math_title(title))
    if path is not None:
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=100)
    return fig


def plot_images(panels: Mapping[str, torch.Tensor], path: str | os.PathLike | None = None,
                title: str | None = None):
    """One row of images without a reference (no metrics): each panel on its own colour scale
    with a colour bar. Saves to ``path`` (atomically, PNG) when given; returns the ``Figure``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    images = {str(k): _as_image(v, f"panels[{k!r}]") for k, v in panels.items()}
    fig = Figure(figsize=(3.4 * len(images), 3.6), constrained_layout=True)
    for ax, (name, img) in zip(fig.subplots(1, len(images), squeeze=False)[0], images.items()):
        _show(ax, img, colorbar=True)
        ax.set_title(math_title(name))
    return _finish(fig, title, path)
