"""Linear operator algebra on batched tensors.

Every operator maps a batch ``x`` of shape ``(B, *in_shape)`` to ``(B, *out_shape)``; the batch
dimension is never looped over. ``forward`` and ``adjoint`` are built from differentiable torch
ops, so autograd's vector-Jacobian product of ``forward`` equals ``adjoint`` (tested).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..linalg import power_iteration, seeded_vector

Shape = tuple[int, ...]


def check_batch(x: torch.Tensor, shape: Shape, name: str = "x") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``x`` has shape ``(B, *shape)`` and is finite."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, {_fmt(shape)}), got {type(x).__name__}")
    if tuple(x.shape[1:]) != tuple(shape) or x.ndim != len(shape) + 1:
        raise ValueError(f"{name}: expected shape (B, {_fmt(shape)}), got {tuple(x.shape)}")
    if not x.is_floating_point() and not x.is_complex():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_image_shape(shape, name: str = "image_shape") -> Shape:
    """``shape`` as a tuple of ints ``(C, H, W)``; ``ValueError`` naming ``name`` unless it is three
    positive sizes."""
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name}: expected (C, H, W), got {shape!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name}: expected (C, H, W) with positive sizes, got {shape!r}")
    return out


def as_image_shape(shape, name: str = "image_shape") -> Shape:
    """The ``(C, H, W)`` an operator constructor is given: an int ``n`` is ``(1, n, n)``, a pair
    ``(H, W)`` is ``(1, H, W)``, a triple is kept. ``ValueError`` naming ``name`` for anything
    else (other types, other lengths, non-positive sizes)."""
    def _size(s) -> int:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise ValueError(f"{name}: expected an int, (H, W) or (C, H, W) of positive ints, got {shape!r}")
        return int(s)

    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        out = (1, int(shape), int(shape))
    elif isinstance(shape, (tuple, list)) and len(shape) in (2, 3):
        out = tuple(_size(s) for s in shape)
        out = (1, *out) if len(out) == 2 else out
    else:
        raise ValueError(f"{name}: expected an int, (H, W) or (C, H, W) of positive ints, got {shape!r}")
    if min(out) < 1:
        raise ValueError(f"{name}: expected positive sizes, got {shape!r}")
    return out


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf values")


def _fmt(shape: Shape) -> str:
    return ", ".join(str(s) for s in shape)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product Re<a, b> summed over everything."""
    if a.is_complex() or b.is_complex():
        return (torch.conj(a) * b).real.sum()
    return (a * b).sum()


class LinearOperator(nn.Module):
    """A bounded linear map ``A: R^{in_shape} -> R^{out_shape}`` applied per sample.

    Subclasses implement ``_forward`` (``x -> A x``) and ``_adjoint`` (``y -> A^* y``) on batched
    tensors; inputs are shape-checked here. Algebra: ``A @ B`` (composition), ``A + B``,
    ``c * A``, ``A.T`` (adjoint operator), ``A.normal(x) = A^*A x``.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)
        self._norm_cache: dict[tuple, float] = {}
        self._derived: dict = {}

    # ---- to implement -------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- public API ---------------------------------------------------------------------
    def derived(self, key, build):
        """``build()``, called once per ``key`` and kept on this operator: operators built from
        this one (e.g. a weighted composition) then keep their cached norms across calls."""
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(B, *in_shape)``."""
        check_batch(x, self.in_shape, "x")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^* y`` for ``y`` of shape ``(B, *out_shape)``."""
        check_batch(y, self.out_shape, "y")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^* A x``."""
        return self.adjoint(self.forward(x))

    @property
    def T(self) -> LinearOperator:
        """The adjoint as an operator: ``A.T(y) = A^* y``."""
        return Adjoint(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Composition(self, other)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Sum(self, Scaled(other, -1.0))

    def __mul__(self, scalar: float) -> LinearOperator:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return Scaled(self, float(scalar))

    __rmul__ = __mul__

    def _probe_tensor(self) -> torch.Tensor:
        """Any tensor registered on the operator (for default device/dtype), else None."""
        for t in list(self.buffers()) + list(self.parameters()):
            return t
        return None

    def _default_device_dtype(self, device, dtype):
        probe = self._probe_tensor()
        if device is None:
            device = probe.device if probe is not None else torch.device("cpu")
        if dtype is None:
            dtype = probe.dtype if (probe is not None and probe.is_floating_point()) else torch.float64
        return device, dtype

    @torch.no_grad()
    def norm(
        self,
        iterations: int = 200,
        tol: float = 1e-7,
        seed: int = 0,
        device=None,
        dtype=None,
        recompute: bool = False,
    ) -> float:
        """Operator norm ``||A|| = sqrt(lambda_max(A^*A))`` by seeded power iteration (cached).

        :func:`~lifted_inverse.linalg.power_iteration` on ``A^*A`` from a ``seed``-ed normal start,
        estimate ``||A^*A v||`` (the larger lower bound), relative tolerance ``tol``.
        Returns the norm, not its square.
        """
        device, dtype = self._default_device_dtype(device, dtype)
        key = (str(device), str(dtype), seed)
        if not recompute and key in self._norm_cache:
            return self._norm_cache[key]
        start = seeded_vector((1, *self.in_shape), seed, dtype, device)
        estimate, _ = power_iteration(self.normal, start, iterations, rtol=tol, estimate="norm")
        value = math.sqrt(estimate)
        self._norm_cache[key] = value
        return value

    @torch.no_grad()
    def adjoint_test(self, batch: int = 2, seed: int = 0, device=None, dtype=torch.float64) -> float:
        """Relative adjoint error ``|<Ax, y> - <x, A^*y>| / (||Ax|| ||y|| + ||x|| ||A^*y||)``."""
        device, dtype = self._default_device_dtype(device, dtype)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn((batch, *self.in_shape), generator=gen, dtype=dtype).to(device)
        y = torch.randn((batch, *self.out_shape), generator=gen, dtype=dtype).to(device)
        ax, aty = self.forward(x), self.adjoint(y)
        lhs, rhs = _inner(ax, y), _inner(x, aty)
        scale = float(torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y)
                      + torch.linalg.vector_norm(x) * torch.linalg.vector_norm(aty))
        return float(abs(lhs - rhs)) / max(scale, torch.finfo(dtype).tiny)

    def dense_matrix(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """The matrix of ``A`` (size ``prod(out_shape) x prod(in_shape)``): small sizes only."""
        device, dtype = self._default_device_dtype(device, dtype)
        n = math.prod(self.in_shape)
        eye = torch.eye(n, dtype=dtype, device=device).reshape(n, *self.in_shape)
        with torch.no_grad():
            cols = self.forward(eye).reshape(n, -1)
        return cols.T

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class Adjoint(LinearOperator):
    """``A^*`` as an operator."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.out_shape, op.in_shape)
        self.op = op

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    @property
    def T(self):
        return self.op


class _Combination(LinearOperator):
    """An operator made of two operators, held as the children named by ``children`` (so records
    and ``repr`` name them); ``_shapes(first, second)`` is the result's ``(in_shape, out_shape)``
    and raises ``ValueError`` when the two do not fit together."""

    children: tuple[str, str]

    def __init__(self, first: LinearOperator, second: LinearOperator):
        super().__init__(*self._shapes(first, second))
        for name, op in zip(self.children, (first, second)):
            setattr(self, name, op)

    @staticmethod
    def _shapes(first: LinearOperator, second: LinearOperator) -> tuple[Shape, Shape]:
        raise NotImplementedError  # pragma: no cover - abstract


class Composition(_Combination):
    """``(A @ B) x = A(B x)``, ``(A @ B)^* = B^* A^*``; ``Composition(outer, inner)``."""

    children = ("outer", "inner")

    @staticmethod
    def _shapes(outer, inner):
        if tuple(outer.in_shape) != tuple(inner.out_shape):
            raise ValueError(f"cannot compose: outer operator expects input shape {outer.in_shape}, "
                             f"inner operator produces {inner.out_shape}")
        return inner.in_shape, outer.out_shape

    def _forward(self, x):
        return self.outer._forward(self.inner._forward(x))

    def _adjoint(self, y):
        return self.inner._adjoint(self.outer._adjoint(y))


class Sum(_Combination):
    """``(A + B) x = A x + B x``, ``(A + B)^* = A^* + B^*``; ``Sum(a, b)``."""

    children = ("a", "b")

    @staticmethod
    def _shapes(a, b):
        if a.in_shape != b.in_shape or a.out_shape != b.out_shape:
            raise ValueError(f"cannot add operators with shapes {a.in_shape}->{a.out_shape} and "
                             f"{b.in_shape}->{b.out_shape}")
        return a.in_shape, a.out_shape

    def _forward(self, x):
        return self.a._forward(x) + self.b._forward(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)


class Scaled(LinearOperator):
    """``(c A) x = c (A x)``."""

    def __init__(self, op: LinearOperator, scalar: float):
        super().__init__(op.in_shape, op.out_shape)
        self.op, self.scalar = op, float(scalar)

    def _forward(self, x):
        return self.scalar * self.op._forward(x)

    def _adjoint(self, y):
        return self.scalar * self.op._adjoint(y)


class Identity(LinearOperator):
    """``I x = x`` (the denoising forward model) on images of ``shape``: ``(C, H, W)``, ``(H, W)``
    (one channel) or an int ``n`` (``(1, n, n)``)."""

    def __init__(self, shape: int | Sequence[int]):
        shape = as_image_shape(shape, "shape")
        super().__init__(shape, shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

    def norm(self, *args, **kwargs) -> float:
        return 1.0
