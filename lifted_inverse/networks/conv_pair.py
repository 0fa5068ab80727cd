"""The analysis/synthesis pair of a 'same' convolution, ``L x = w ⋆ x`` (C → F channels) and its
exact adjoint ``L* u`` (F → C), with autograd rules that never run a transposed convolution
with few output channels.

Why: on CPU, torch's kernels for ``conv_transpose2d`` from F = 16–24 channels to C = 1 (and the
input gradient of ``conv2d``, the same operation) are several times slower than the forward
convolution (timings: docs/results.md). Here ``L* u`` is computed as one matrix
product and a col2im sum,

    V = Wᵀ u  (W = w reshaped to F × Ck², per pixel),   L* u = fold(V)  (overlapping k×k patches),

which is the transposed convolution term for term. Gradients:
``∂⟨g, L x⟩/∂x = L* g``, ``∂⟨g, L* u⟩/∂u = L g``, and the weight gradients of both are torch's
weight-only convolution backward. On other devices torch's own kernels are used.
Scope: stride 1, dilation 1, one group, odd kernels, zero padding ``k // 2`` (output size = input size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf


def _synthesis_cpu(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``L* u`` = fold(Wᵀ u) (module docstring); u (B, F, H, W), w (F, C, k, k)."""
    f, c, k, _ = w.shape
    b = u.shape[0]
    # a batched product keeps u's layout (matmul would copy u to (B·HW, F) first)
    cols = torch.bmm(w.reshape(f, c * k * k).t().expand(b, c * k * k, f), u.reshape(b, f, -1))
    return nnf.fold(cols, u.shape[-2:], k, padding=k // 2)


def _synthesis_raw(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if u.device.type == "cpu":
        return _synthesis_cpu(u, w)
    return nnf.conv_transpose2d(u, w, padding=w.shape[-1] // 2)


def weight_gradient(x: torch.Tensor, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``∂⟨g, w ⋆ x⟩/∂w`` (x (B, C, H, W), g (B, F, H, W))."""
    p = w.shape[-1] // 2
    return torch.ops.aten.convolution_backward(g, x, w, None, (1, 1), (p, p), (1, 1), False, (0, 0), 1,
                                               (False, True, False))[1]


class _Analysis(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return nnf.conv2d(x, w, padding=w.shape[-1] // 2)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = _synthesis_raw(g, w) if ctx.needs_input_grad[0] else None
        gw = weight_gradient(x, g, w) if ctx.needs_input_grad[1] else None
        return gx, gw


class _Synthesis(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, w):
        ctx.save_for_backward(u, w)
        return _synthesis_raw(u, w)

    @staticmethod
    def backward(ctx, g):
        u, w = ctx.saved_tensors
        gu = nnf.conv2d(g, w, padding=w.shape[-1] // 2) if ctx.needs_input_grad[0] else None
        gw = weight_gradient(g, u, w) if ctx.needs_input_grad[1] else None   # ⟨g, L*u⟩ = ⟨L g, u⟩
        return gu, gw


def analysis(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``L x``: (B, C, H, W) → (B, F, H, W) for w (F, C, k, k), 'same' zero padding."""
    return _Analysis.apply(x, w)


def synthesis(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``L* u``: (B, F, H, W) → (B, C, H, W), the exact adjoint of :func:`analysis`."""
    return _Synthesis.apply(u, w)
