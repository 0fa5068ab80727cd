"""Interoperability with ODL 1.0 operators, both ways.

* :func:`from_odl` wraps a linear ODL ``Operator`` ``T: X -> Y`` (``X``, ``Y`` discretised or
  tensor spaces) as a :class:`LinearOperator` on ``(B, 1, *X.shape) -> (B, 1, *Y.shape)`` (the
  channel axis is added when the space is 2-D; otherwise shapes are kept). ODL adjoints are taken
  in the spaces' weighted inner products ``<u, v>_X = w_X Σ u v``; our operators use the plain
  Euclidean product, so the wrapper's adjoint is ``T^T y = (w_Y / w_X) T*_ODL y`` (constant
  weightings only). The batch is looped over in numpy inside the wrapper (ODL has no batch
  axis); derivatives (autograd, ``torch.func``) come from :func:`~.linear_function.apply_linear`,
  whose backward is that adjoint.
* :func:`to_odl` exposes one of ours as a linear ODL operator between unweighted ``odl.rn``
  spaces (so its ``adjoint`` is our ``adjoint``), for ODL's solvers and diagnostics
  (``odl.core.operator.oputils.power_method_opnorm``, ``odl.core.diagnostics``).
* :func:`odl_ray_transform` builds ODL's ``RayTransform`` with the geometry of our
  :class:`~lifted_inverse.operators.Radon` (unit pixels, rotation centre at ``(H//2, W//2)``,
  detector bin ``d`` at ``d - D//2``; ODL angle ``φ = θ + π/2``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import LinearOperator
from .linear_function import apply_linear

__all__ = ["ODLOperator", "from_odl", "odl_fan_ray_transform", "odl_ray_transform", "to_odl"]


def _odl():
    try:
        import odl
    except ImportError as exc:  # pragma: no cover - odl is a dependency
        raise ImportError("odl>=1.0 is required for ODL interoperability") from exc
    return odl


def _weight(space, name: str) -> float:
    weighting = getattr(space, "weighting", None)
    if weighting is None:
        return 1.0
    const = getattr(weighting, "const", None)
    if const is None:
        raise ValueError(f"{name}: only spaces with a constant weighting are supported, got {weighting!r}")
    return float(const)


def _torch_shape(space_shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, *space_shape) if len(space_shape) == 2 else tuple(space_shape)


class _NumpyMap:
    """The wrapped ODL operator as a linear map object for :func:`~.linear_function.apply_linear`
    (which supplies its derivatives and its ``torch.func`` rules)."""

    def __init__(self, wrapper: ODLOperator):
        self.wrapper = wrapper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrapper._numpy_apply(x, False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.wrapper._numpy_apply(y, True)


class ODLOperator(LinearOperator):
    """A linear ODL operator as a :class:`LinearOperator` (see the module docstring)."""

    def __init__(self, odl_operator):
        odl = _odl()
        if not isinstance(odl_operator, odl.Operator):
            raise TypeError(f"odl_operator: expected an odl.Operator, got {type(odl_operator).__name__}")
        if not odl_operator.is_linear:
            raise ValueError("odl_operator: expected a linear operator")
        dom, ran = odl_operator.domain, odl_operator.range
        for space, name in ((dom, "domain"), (ran, "range")):
            if not hasattr(space, "shape") or getattr(space, "is_complex", False):
                raise ValueError(f"odl_operator: {name} must be a real tensor space, got {space!r}")
        super().__init__(_torch_shape(tuple(dom.shape)), _torch_shape(tuple(ran.shape)))
        self.odl_operator = odl_operator
        self._adjoint_scale = _weight(ran, "odl_operator.range") / _weight(dom, "odl_operator.domain")

    def _numpy_apply(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        op = self.odl_operator.adjoint if adjoint else self.odl_operator
        out_shape = self.in_shape if adjoint else self.out_shape
        arr = x.detach().cpu().numpy()
        outs = []
        for sample in arr:
            elem = op.domain.element(sample.reshape(op.domain.shape).astype(op.domain.dtype, copy=False))
            outs.append(np.asarray(op(elem).asarray()).reshape(out_shape))
        res = torch.from_numpy(np.stack(outs)).to(dtype=x.dtype, device=x.device)
        return res * self._adjoint_scale if adjoint else res

    def _forward(self, x):
        return apply_linear(x, _NumpyMap(self))

    def _adjoint(self, y):
        return apply_linear(y, _NumpyMap(self), adjoint=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, odl={self.odl_operator!r}"


def from_odl(odl_operator) -> ODLOperator:
    """Wrap a linear ODL operator as one of ours (Euclidean adjoint, batched, autograd-aware)."""
    return ODLOperator(odl_operator)


def to_odl(operator: LinearOperator, dtype: str = "float64"):
    """Expose ``operator`` as a linear ``odl.Operator`` between ``odl.rn(in_shape)`` and
    ``odl.rn(out_shape)`` (unweighted), with ``.adjoint`` our adjoint. Evaluation runs on CPU in
    ``dtype`` with a batch of one."""
    odl = _odl()
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a LinearOperator, got {type(operator).__name__}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    tdtype = torch.float64 if dtype == "float64" else torch.float32

    class _Wrapped(odl.Operator):
        def __init__(self, op: LinearOperator, adjoint_of=None):
            self.op = op
            self._adjoint_of = adjoint_of
            super().__init__(odl.rn(op.in_shape, dtype=dtype), odl.rn(op.out_shape, dtype=dtype), linear=True)

        def _call(self, x):
            t = torch.from_numpy(np.array(x.asarray(), dtype=dtype)).reshape(1, *self.op.in_shape)
            with torch.no_grad():
                y = self.op(t.to(tdtype))
            return self.range.element(y[0].cpu().numpy())

        @property
        def adjoint(self):
            if self._adjoint_of is not None:
                return self._adjoint_of
            return _Wrapped(self.op.T, adjoint_of=self)

        def __repr__(self):
            return f"to_odl({self.op!r})"

    return _Wrapped(operator)


def odl_ray_transform(image_size: int | Sequence[int], n_angles: int = 180, impl: str | None = None,
                      angles=None, n_detectors: int | None = None,
                      angle_range: Sequence[float] = (0.0, math.pi)):
    """ODL ``RayTransform`` with the same geometry and unit cell sizes as
    ``Radon(image_size, n_angles, angles, n_detectors, angle_range)``.

    ``impl``: ``'astra_cpu'``, ``'astra_cuda'``, ``'skimage'`` or ``None`` (ODL's choice).
    ``skimage`` needs a square image centred at 0, so for even sizes its pixel grid is shifted
    by half a pixel against ours. ODL 1.0's ASTRA backends ignore the detector partition's offset,
    so for even ``D`` the detector is half a bin off as well: use odd sizes for exact comparisons.
    Values agree with :class:`Radon` up to the discretisation of each backend (ASTRA: area/line
    models; skimage: resampled to its own detector); the differences are in docs/results.md.
    """
    odl = _odl()
    from odl.applications.tomo import Parallel2dGeometry, RayTransform

    from .radon import _parse_image_size, _uniform_angles, diagonal_detectors

    h, w = _parse_image_size(image_size)
    d = diagonal_detectors((h, w)) if n_detectors is None else int(n_detectors)
    ang = (np.asarray(angles, dtype=np.float64).reshape(-1) if angles is not None
           else _uniform_angles(int(n_angles), angle_range))
    lo = np.array([-(h // 2) - 0.5, -(w // 2) - 0.5])
    if impl == "skimage":  # that backend insists on a space centred at 0: half a pixel off for even sizes
        lo = -np.array([h, w]) / 2.0
    dtype = "float32" if (impl or "").startswith("astra") else "float64"  # ASTRA links float32 only
    space = odl.uniform_discr(lo, lo + np.array([h, w]), (h, w), dtype=dtype)
    odl_angles = ang + math.pi / 2
    if angles is None and len(ang) > 1:
        step = ang[1] - ang[0]
        apart = odl.uniform_partition(odl_angles[0] - step / 2, odl_angles[-1] + step / 2, len(ang))
    else:
        apart = odl.nonuniform_partition(odl_angles)
    dpart = odl.uniform_partition(-(d // 2) - 0.5, d - d // 2 - 0.5, d)
    geometry = Parallel2dGeometry(apart, dpart)
    kwargs = {} if impl is None else {"impl": impl}
    return RayTransform(space, geometry, **kwargs)


def odl_fan_ray_transform(geometry, impl: str | None = None):
    """ODL ``RayTransform`` of the fan-beam :class:`~.geometry.FanBeamGeometry` ``geometry``
    (``odl.applications.tomo.FanBeamGeometry``, flat detector).

    ODL's coordinates ``(x_0, x_1)`` are our ``(row, col)`` about the rotation centre (the space
    spans ``[-(H//2) - 1/2, H - H//2 - 1/2] p`` x ...). At ODL angle ``φ`` the source-to-detector
    direction is ``rot(φ)(0, 1) = (-sin φ, cos φ)``, which is our ``e_β`` for ``φ = β - π/2``; the
    detector axis ``rot(φ)(-1, 0)`` is then our ``n_β``, and the detector partition has its cell
    centres at our bin positions ``u_d``. ``impl``: ``'astra_cpu'``, ``'astra_cuda'`` or ``None``
    (ODL's choice; fan beam has no skimage backend). Values agree with :class:`~.radon.Radon`
    up to the backend's discretisation (ASTRA's line model; float32).
    """
    odl = _odl()
    from odl.applications.tomo import FanBeamGeometry as ODLFanBeamGeometry
    from odl.applications.tomo import RayTransform

    from .geometry import FanBeamGeometry

    if not isinstance(geometry, FanBeamGeometry):
        raise TypeError(f"geometry: expected a FanBeamGeometry, got {type(geometry).__name__}")
    h, w = geometry.image_shape
    p = geometry.pixel_size
    cr, cc = geometry.centre()
    lo = np.array([-cr - 0.5, -cc - 0.5]) * p
    dtype = "float32" if (impl or "astra").startswith("astra") else "float64"
    space = odl.uniform_discr(lo, lo + np.array([h, w]) * p, (h, w), dtype=dtype)
    odl_angles = geometry.angles - math.pi / 2
    if geometry.uniform and geometry.n_angles > 1:
        step = geometry.angle_step
        apart = odl.uniform_partition(odl_angles[0] - step / 2, odl_angles[-1] + step / 2,
                                      geometry.n_angles)
    else:
        apart = odl.nonuniform_partition(odl_angles)
    u = geometry.detector_positions()
    du = geometry.detector_spacing
    dpart = odl.uniform_partition(u[0] - du / 2, u[-1] + du / 2, geometry.n_detectors)
    odl_geometry = ODLFanBeamGeometry(apart, dpart, geometry.source_origin, geometry.origin_detector,
                                      det_axis_init=(-1, 0))
    kwargs = {} if impl is None else {"impl": impl}
    return RayTransform(space, odl_geometry, **kwargs)
