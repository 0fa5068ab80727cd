"""Convergence figure of a training run (matplotlib Agg, written atomically)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_path


def plot_convergence(histories: dict[str, Sequence[dict]], path: str | os.PathLike,
                     metric: str = "test_accuracy") -> Path:
    """Two panels: objective per epoch (log scale) and ``metric`` against training wall-clock.

    ``histories`` maps a label (e.g. ``'bregman/bcd'``) to its list of epoch records.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, hist in histories.items():
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        obj = [h["objective"] for h in hist]
        ax1.plot(ep, obj, marker=".", label=label)
        evaluated = [h for h in hist if h.get(metric) is not None]
        if evaluated:
            ax2.plot([h["seconds"] for h in evaluated], [h[metric] for h in evaluated], marker=".", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training objective")
    if all(h["objective"] > 0 for hist in histories.values() for h in hist):
        ax1.set_yscale("log")
    ax1.set_title("objective")
    ax2.set_xlabel("training time [s]")
    ax2.set_ylabel(metric.replace("_", " "))
    ax2.set_title(f"{metric.replace('_', ' ')} vs wall-clock")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    return path
