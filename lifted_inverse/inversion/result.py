"""Result container and the iteration bookkeeping shared by the inversion solvers."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

#: ``callback(iteration, u, record) -> bool | None``; returning ``True`` stops the solver.
Callback = Callable[[int, torch.Tensor, dict], Any]


@dataclass
class InversionResult:
    """``u``: the inverted input ``(B, *input_shape)``; ``history``: per-iteration records
    (``objective``, ``change`` = ‖u_{k+1} − u_k‖/‖u_k‖, ``time`` in seconds since the start);
    ``state``: solver internals (TV dual variable, lifted states) for warm starts and diagnostics.
    """

    u: torch.Tensor
    alpha: float
    iterations: int
    converged: bool
    seconds: float
    method: str
    history: dict[str, list[float]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        values = self.history.get("objective", [])
        return values[-1] if values else math.nan


def relative_change(new: list[torch.Tensor], old: list[torch.Tensor]) -> float:
    """``sqrt(Σ‖new_i − old_i‖²) / sqrt(Σ‖old_i‖²)`` over a list of blocks."""
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(new, old))
    den = sum(float((b * b).sum()) for b in old)
    return (num / max(den, 1e-60)) ** 0.5


class IterationLog:
    """Timing, history, tolerance test, callbacks and the tqdm bar of one solver run."""

    def __init__(self, iterations: int, tol: float, callbacks: Iterable[Callback] | None,
                 progress: bool, time_limit: float | None, desc: str):
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations: expected a positive integer, got {iterations!r}")
        if not tol >= 0:
            raise ValueError(f"tol: expected a non-negative number, got {tol!r}")
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit: expected a positive number of seconds, got {time_limit!r}")
        self.callbacks = list(callbacks or ())
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks: expected callables, got {cb!r}")
        self.iterations, self.tol, self.time_limit = iterations, tol, time_limit
        self.history: dict[str, list[float]] = {"objective": [], "change": [], "time": []}
        self.bar = tqdm(total=iterations, desc=desc, disable=not progress, leave=False)
        self.start = time.perf_counter()
        self.count = 0
        self.converged = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def record(self, u: torch.Tensor, u_old: torch.Tensor, objective: float, change: float | None = None,
               **extra: float) -> bool:
        """Log one iteration; return ``True`` when the solver should stop.

        ``change`` defaults to ``‖u − u_old‖/‖u_old‖``; lifted solvers pass the change of all blocks.
        """
        self.count += 1
        if change is None:
            change = relative_change([u], [u_old])
        rec = {"objective": float(objective), "change": change, "time": self.elapsed(), **extra}
        for key, value in rec.items():
            self.history.setdefault(key, []).append(float(value))
        self.bar.update(1)
        stop = False
        for cb in self.callbacks:
            stop = bool(cb(self.count, u, rec)) or stop
        if change <= self.tol and self.count > 1:
            self.converged = True
            stop = True
        if self.time_limit is not None and rec["time"] >= self.time_limit:
            stop = True
        return stop

    def close(self) -> float:
        self.bar.close()
        return self.elapsed()
