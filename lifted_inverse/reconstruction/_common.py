"""Pieces shared by the iterative solvers: result type, per-sample reductions, progress bars."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..operators.base import LinearOperator, check_batch, check_finite

Callback = Callable[[int, torch.Tensor, dict], Any]


@dataclass
class SolverResult:
    """Output of an iterative solver.

    ``x``: the reconstruction (B, *A.in_shape); ``history``: per-iteration lists of floats (batch
    means), e.g. ``energy``, ``rel_change``; ``iterations``: iterations run; ``converged``: whether
    the stopping tolerance was met. Unpacks as ``x, history = result``.
    """

    x: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    iterations: int = 0
    converged: bool = False

    def __iter__(self) -> Iterator:
        return iter((self.x, self.history))


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product ``<a_b, b_b>``, shape (B,)."""
    if a.is_complex() or b.is_complex():
        return (torch.conj(a) * b).real.flatten(1).sum(dim=1)
    return (a * b).flatten(1).sum(dim=1)


def batch_norm(a: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm, shape (B,)."""
    return torch.linalg.vector_norm(a.flatten(1), dim=1)


def per_sample(value: float | torch.Tensor, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar or (B,) parameter as a (B,) tensor on ``like``'s device, checked non-negative."""
    t = torch.as_tensor(value, dtype=like.real.dtype if like.is_complex() else like.dtype,
                        device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name}: expected a scalar or shape ({batch},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(f"{name}: expected finite non-negative values, got {value!r}")
    return t


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against ``like`` (B, ...)."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def check_problem(A: LinearOperator, y: torch.Tensor, x0: torch.Tensor | None) -> None:
    if not isinstance(A, LinearOperator):
        raise TypeError(f"A: expected a LinearOperator, got {type(A).__name__}")
    check_batch(y, A.out_shape, "y")
    check_finite(y, "y")
    if x0 is not None:
        check_batch(x0, A.in_shape, "x0")
        check_finite(x0, "x0")
        if x0.shape[0] != y.shape[0]:
            raise ValueError(f"x0: batch size {x0.shape[0]} differs from y's {y.shape[0]}")


def check_iterations(max_iter: int, tol: float) -> None:
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive int, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol: expected >= 0, got {tol!r}")


def iterate(steps: Iterable[tuple[torch.Tensor, dict]], start: torch.Tensor, max_iter: int, *,
            done: Callable[[dict], bool], callback: Callback | None = None, progress: bool = False,
            desc: str = "", show: Callable[[dict], dict] | None = None) -> SolverResult:
    """Drive an iterative solver: ``steps`` yields ``(x_{k+1}, info)`` once per iteration
    (``info``: per-sample tensors (B,) or floats). For at most ``max_iter`` iterations, record
    ``info``'s batch means in ``history``, show ``show(info)`` on the progress bar, call
    ``callback(k, x, info)`` (``True`` stops) and stop with ``converged=True`` once ``done(info)``.
    ``start`` is the result when no iteration runs."""
    x = start
    history: dict[str, list[float]] = {}
    converged = False
    bar_steps, bar = iteration_range(max_iter, progress, desc)
    for k, (x, info) in zip(bar_steps, steps):
        record(history, info)
        if bar is not None and show is not None:
            bar.set_postfix(show(info))
        if callback is not None and callback(k, x, info):
            break
        if done(info):
            converged = True
            break
    iterations = len(next(iter(history.values()), []))
    return SolverResult(x=x, history=history, iterations=iterations, converged=converged)


def iteration_range(max_iter: int, progress: bool, desc: str):
    if not progress:
        return range(max_iter), None
    from tqdm.auto import tqdm

    bar = tqdm(range(max_iter), desc=desc, unit="it", leave=False)
    return bar, bar


def record(history: dict[str, list[float]], info: dict[str, torch.Tensor | float]) -> None:
    for key, value in info.items():
        if isinstance(value, torch.Tensor):
            value = float(value.mean())
        history.setdefault(key, []).append(float(value))
