"""One ``torch.autograd.Function`` for linear maps computed outside autograd (sparse kernels,
generated matrix rows, foreign libraries), usable under ``torch.func``.

A *linear map object* ``m`` has ``m.forward(x)`` (``A x``) and ``m.adjoint(y)`` (``A^T y``) on
batch-first tensors ``(B, ...)``. :func:`apply_linear` ``(x, m, adjoint)`` computes ``A x`` (or
``A^T x``) with the derivatives of a linear map:

* reverse mode (``backward``, ``torch.func.vjp`` / ``grad``): ``v -> A^T v`` (resp. ``A v``),
  itself through :func:`apply_linear`, so the map is differentiable to any order;
* forward mode (``jvp``, ``torch.func.jvp`` / ``jacfwd``): ``t -> A t`` (resp. ``A^T t``);
* ``torch.func.vmap``: the mapped dimension is folded into the batch dimension ``B`` (the maps
  act on every sample alike), so no per-sample loop is run.
"""
from __future__ import annotations

import torch

__all__ = ["apply_linear"]


class _LinearApply(torch.autograd.Function):
    """``forward(x, m, adjoint) = m.adjoint(x) if adjoint else m.forward(x)`` (module docstring)."""

    @staticmethod
    def forward(x, linear_map, adjoint):
        return linear_map.adjoint(x) if adjoint else linear_map.forward(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.linear_map, ctx.adjoint = inputs

    @staticmethod
    def backward(ctx, grad):
        return _LinearApply.apply(grad, ctx.linear_map, not ctx.adjoint), None, None

    @staticmethod
    def jvp(ctx, tangent, *_):
        return _LinearApply.apply(tangent, ctx.linear_map, ctx.adjoint)

    @staticmethod
    def vmap(info, in_dims, x, linear_map, adjoint):
        if in_dims[0] is None:
            return _LinearApply.apply(x, linear_map, adjoint), None
        x = x.movedim(in_dims[0], 0)
        n_map, batch = x.shape[0], x.shape[1]
        out = _LinearApply.apply(x.reshape(n_map * batch, *x.shape[2:]), linear_map, adjoint)
        return out.reshape(n_map, batch, *out.shape[1:]), 0


def apply_linear(x: torch.Tensor, linear_map, adjoint: bool = False) -> torch.Tensor:
    """``A x`` (``adjoint=False``) or ``A^T x`` of the linear map object ``linear_map`` (module
    docstring), differentiable in both modes and vmap-able."""
    return _LinearApply.apply(x, linear_map, bool(adjoint))
