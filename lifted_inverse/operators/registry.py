"""The operator spec: a JSON-able description ``{"name": ..., **parameters}`` <-> an operator.

``operator_from_spec(spec, image_shape)`` builds the forward operator for images of
``image_shape = (C, H, W)``; ``spec_of(operator)`` gives the complete spec back (every default
filled in, so a file or checkpoint that stores it rebuilds the same matrix whatever later
defaults become); ``resolve_spec`` is the complete spec without building. The CLI, the ``data``
command, HDF5 measurement files, the imaging tasks and checkpoints all describe operators this
way. Names and parameters (defaults in brackets):

* ``'denoise'``: :class:`Identity` (no parameters).
* ``'blur'``: :class:`Blur`; ``kernel`` (a name in :data:`~.blur.KERNEL_NAMES` or a 2-D list)
  [``'gaussian'``: 9x9, σ = 1.5], ``boundary`` [``'circular'``].
* ``'ct'``: :class:`Radon`, one channel, of the geometry ``geometry`` [``'parallel'``] or
  ``'fan'`` (:mod:`.geometry`; lengths in one unit); ``n_angles`` [60, the sparse-view setting]
  uniform in ``angle_range`` [``[0, π]`` parallel, ``[0, 2π]`` fan] or explicit ``angles`` (a list
  of radians), ``n_detectors``, ``detector_spacing`` [1; fan: 2 p], ``detector_offset`` [0],
  ``pixel_size`` (``p``) [1], ``model`` [``'joseph'``]. Parallel: ``n_detectors`` [
  :func:`~.geometry.diagonal_detectors`: ``ceil(hypot(H, W))``, rays cover the whole image];
  the physical parameters appear in the spec only when set otherwise (so older specs resolve
  to themselves). Fan: ``source_origin`` [``2 max(H, W) p``], ``origin_detector`` [same]
  and ``n_detectors`` [:func:`~.geometry.fan_detectors`: the fan covers the whole image].
  How it is computed, not what: ``method`` [``'auto'``] and ``disk_cache`` [false] are kept in
  the spec only when set otherwise. Named scanners: :func:`~.scanners.scanner_spec`.
  Imaging checkpoints name the count of angles ``angles`` (an integer) and the detectors
  ``detectors`` (``'full'``: the default); both are read as ``n_angles`` / ``n_detectors``.
* ``'inpaint'``: :class:`Mask`; ``keep`` [0.5] and ``seed`` [0] (:func:`random_mask`), or ``mask``.
* ``'mri'``: :class:`SubsampledFourier`; ``kind`` [``'random'``], ``acceleration`` [4],
  ``center_fraction`` [0.08], ``seed`` [0] (:func:`sampling_mask`), or ``mask``.

``make_operator(name, image_shape, **options)`` is ``operator_from_spec({"name": name, **options})``
(``kernel`` and ``mask`` may then be tensors).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import Identity, LinearOperator, check_image_shape
from .blur import Blur, box_kernel, gaussian_kernel
from .fourier import SubsampledFourier, sampling_mask
from .geometry import (
    DEFAULT_N_ANGLES,
    GEOMETRY_KINDS,
    FanBeamGeometry,
    ParallelBeamGeometry,
    fan_detectors,
    geometry_from_dict,
)
from .gradient import Gradient
from .mask import Mask, random_mask
from .radon import Radon
from .sinogram_filter import SinogramFilter

__all__ = ["OPERATOR_CASES", "OPERATOR_NAMES", "make_operator", "operator_from_spec", "resolve_spec",
           "spec_of"]

OPERATOR_NAMES = ("denoise", "blur", "ct", "inpaint", "mri")
_SPEC_ATTR = "_operator_spec"  # the resolved spec, kept on operators built here

_CT_DEFAULTS = {"n_angles": DEFAULT_N_ANGLES, "angle_range": [0.0, math.pi], "model": "joseph"}
_CT_BUILD_DEFAULTS = {"method": "auto", "disk_cache": False}
_ALLOWED = {
    "denoise": (),
    "blur": ("kernel", "boundary"),
    "ct": ("n_angles", "angles", "angle_range", "n_detectors", "model", "method", "disk_cache",
           "detectors", "geometry", "detector_spacing", "detector_offset", "pixel_size",
           "source_origin", "origin_detector"),
    "inpaint": ("mask", "keep", "seed"),
    "mri": ("mask", "kind", "acceleration", "center_fraction", "seed"),
}


def _as_list(value) -> Any:
    """Tensors, arrays and NumPy scalars as (nested lists of) Python numbers (float64 values
    round-trip exactly through JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_list(v) for v in value]
    return value


def _ct_spec(options: dict, shape) -> dict:
    angles = options.pop("angles", None)
    if isinstance(angles, int) and not isinstance(angles, bool):  # an imaging checkpoint's count
        if "n_angles" in options:
            raise ValueError("options: 'ct' got both n_angles and an angle count 'angles'")
        options["n_angles"], angles = int(angles), None
    if "detectors" in options:  # an imaging checkpoint's detector count ('full': the default)
        detectors = options.pop("detectors")
        if "n_detectors" in options:
            raise ValueError("options: 'ct' got both n_detectors and detectors")
        options["n_detectors"] = None if detectors in (None, "full") else detectors
    if shape[0] != 1:
        raise ValueError(f"image_shape: the 'ct' operator takes one channel, got {shape}")
    kind = options.get("geometry", "parallel")
    if kind not in GEOMETRY_KINDS:
        raise ValueError(f"geometry: expected one of {GEOMETRY_KINDS}, got {kind!r}")
    fan = kind == "fan"
    if not fan and ("source_origin" in options or "origin_detector" in options):
        raise ValueError("options: source_origin/origin_detector need geometry 'fan'")
    spec = {"name": "ct"}
    if fan:
        spec["geometry"] = "fan"
    if angles is None:
        spec["n_angles"] = options.get("n_angles", _CT_DEFAULTS["n_angles"])
        default_range = [0.0, 2 * math.pi] if fan else _CT_DEFAULTS["angle_range"]
        rng = options.get("angle_range", default_range)
        spec["angle_range"] = [0.0, float(rng)] if np.isscalar(rng) else [float(a) for a in rng]
    else:
        if "n_angles" in options or "angle_range" in options:
            raise ValueError("options: 'ct' takes explicit angles or n_angles/angle_range, not both")
        spec["angles"] = [float(a) for a in np.asarray(angles, dtype=np.float64).reshape(-1)]
    n_det = options.get("n_detectors")
    pixel = options.get("pixel_size", 1.0)
    if fan:
        size = max(shape[1:]) * float(pixel)
        spec["detector_spacing"] = options.get("detector_spacing", 2.0 * float(pixel))
        spec["detector_offset"] = options.get("detector_offset", 0.0)
        spec["pixel_size"] = pixel
        spec["source_origin"] = options.get("source_origin", 2.0 * size)
        spec["origin_detector"] = options.get("origin_detector", 2.0 * size)
        spec["n_detectors"] = (fan_detectors(shape[1:], spec["detector_spacing"], spec["source_origin"],
                                             spec["origin_detector"], pixel) if n_det is None else n_det)
    else:
        for key, default in (("detector_spacing", 1.0), ("detector_offset", 0.0), ("pixel_size", 1.0)):
            if options.get(key, default) != default:
                spec[key] = options[key]
        if n_det is None:  # the rays cover the whole image (ParallelBeamGeometry's default)
            n_det = ParallelBeamGeometry(shape[1:], 1, None, spec.get("detector_spacing", 1.0),
                                         spec.get("pixel_size", 1.0)).n_detectors
        spec["n_detectors"] = n_det
    spec["model"] = options.get("model", _CT_DEFAULTS["model"])
    for key, default in _CT_BUILD_DEFAULTS.items():
        if options.get(key, default) != default:
            spec[key] = options[key]
    return spec


def resolve_spec(spec: Mapping, image_shape: Sequence[int]) -> dict:
    """The complete spec (every default filled in) of ``spec`` for images of ``image_shape``.

    Raises ``ValueError`` naming ``name``, ``options`` or ``image_shape`` for an unknown name,
    a parameter the operator does not take, or a shape it cannot act on."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"spec: expected a mapping with a 'name', got {spec!r}")
    name = spec["name"]
    if name not in OPERATOR_NAMES:
        raise ValueError(f"name: unknown operator {name!r}; expected one of {', '.join(OPERATOR_NAMES)}")
    shape = check_image_shape(image_shape)
    options = {k: _as_list(v) for k, v in spec.items() if k != "name"}
    extra = sorted(set(options) - set(_ALLOWED[name]))
    if extra:
        raise ValueError(f"options: {extra} not accepted by operator {name!r} (accepted: "
                         f"{sorted(k for k in _ALLOWED[name] if k != 'detectors')})")
    if name == "denoise":
        return {"name": name}
    if name == "blur":
        kernel = options.get("kernel", "gaussian")
        return {"name": name, "kernel": kernel,
                "boundary": options.get("boundary", "circular")}
    if name == "ct":
        return _ct_spec(options, shape)
    if "mask" in options:
        if len(options) > 1:
            raise ValueError(f"options: {name!r} takes a mask or the parameters to draw one, not both")
        return {"name": name, "mask": options["mask"]}
    if name == "inpaint":
        return {"name": name, "keep": float(options.get("keep", 0.5)), "seed": int(options.get("seed", 0))}
    return {"name": name, "kind": options.get("kind", "random"),
            "acceleration": float(options.get("acceleration", 4.0)),
            "center_fraction": float(options.get("center_fraction", 0.08)), "seed": int(options.get("seed", 0))}


def operator_from_spec(spec: Mapping, image_shape: Sequence[int] | None = None) -> LinearOperator:
    """The operator ``spec`` describes, for images of ``image_shape = (C, H, W)``.

    ``spec_of`` of the result is :func:`resolve_spec` of ``spec``. Without ``image_shape``,
    ``spec`` is the operator record an output file stores (the ``operator`` attribute of
    ``result.h5`` and of ``lifted-inverse data`` files: ``{"spec", "in_shape", "out_shape", ...}``,
    :func:`~lifted_inverse.datasets.hdf5.operator_record`), checked against its output shape."""
    if image_shape is None:
        if not (isinstance(spec, Mapping) and isinstance(spec.get("spec"), Mapping) and "in_shape" in spec):
            raise ValueError("image_shape: required unless spec is an operator record of an output file "
                             "({'spec': ..., 'in_shape': ..., 'out_shape': ...})")
        op = operator_from_spec(spec["spec"], spec["in_shape"])
        if "out_shape" in spec and list(op.out_shape) != list(spec["out_shape"]):
            raise ValueError(f"spec: rebuilds an operator with output shape {list(op.out_shape)}, the record "
                             f"says {list(spec['out_shape'])}")
        return op
    shape = check_image_shape(image_shape)
    resolved = resolve_spec(spec, shape)
    name = resolved["name"]
    if name == "denoise":
        op = Identity(shape)
    elif name == "blur":
        op = Blur(shape, resolved["kernel"] if isinstance(resolved["kernel"], str)
                  else torch.tensor(resolved["kernel"], dtype=torch.float64), resolved["boundary"])
    elif name == "ct":
        build = {k: resolved[k] for k in ("model", *_CT_BUILD_DEFAULTS) if k in resolved}
        params = {k: v for k, v in resolved.items() if k not in ("name", *build)}
        op = Radon(geometry=geometry_from_dict(shape[1:], params), **build)
    else:
        mask = resolved.get("mask")
        if name == "inpaint":
            op = Mask(shape, random_mask(shape[1:], resolved["keep"], resolved["seed"]) if mask is None
                      else torch.tensor(mask, dtype=torch.float64))
        else:
            if mask is None:
                mask = sampling_mask(shape[1:], resolved["kind"], resolved["acceleration"],
                                     resolved["center_fraction"], resolved["seed"])
            op = SubsampledFourier(shape, torch.as_tensor(mask, dtype=torch.float64))
    setattr(op, _SPEC_ATTR, resolved)
    return op


def make_operator(name: str, image_shape: Sequence[int], **options) -> LinearOperator:
    """Build the forward operator ``name`` for images of ``image_shape = (C, H, W)``
    (:func:`operator_from_spec` of ``{"name": name, **options}``)."""
    return operator_from_spec({"name": name, **options}, image_shape)


def spec_of(operator: LinearOperator) -> dict:
    """The complete, JSON-able spec of ``operator``: ``operator_from_spec(spec_of(A), A.in_shape)``
    has the matrix of ``A``. Operators built by :func:`operator_from_spec` give their resolved spec;
    an :class:`Identity`, :class:`Blur`, :class:`Radon`, :class:`Mask` or
    :class:`SubsampledFourier` built directly is read back from its attributes.
    Raises ``TypeError`` for other operators (compositions, sums, ...): they have no name here."""
    stored = getattr(operator, _SPEC_ATTR, None)
    if stored is not None:
        return copy.deepcopy(stored)
    kind = type(operator)
    if kind is Identity:
        return {"name": "denoise"}
    if kind is Blur:
        return {"name": "blur", "kernel": _as_list(operator.kernel), "boundary": operator.boundary}
    if kind is Radon:
        spec = {"name": "ct", **operator.geometry.as_dict()}
        if spec["geometry"] == "parallel":  # the physical parameters only when not the defaults
            del spec["geometry"]
            for key, default in (("detector_spacing", 1.0), ("detector_offset", 0.0), ("pixel_size", 1.0)):
                if spec[key] == default:
                    del spec[key]
        spec["model"] = operator.model
        return spec
    if kind is Mask:
        return {"name": "inpaint", "mask": _as_list(operator.mask)}
    if kind is SubsampledFourier:
        return {"name": "mri", "mask": _as_list(operator.mask)}
    raise TypeError(f"operator: {kind.__name__} has no spec (operators with one: "
                    f"{', '.join(OPERATOR_NAMES)}); describe it with datasets.hdf5.describe")


def _cases() -> list[tuple[str, Callable[[], LinearOperator]]]:
    """Small instances of every operator and variant, for the parametrised operator tests."""
    s12 = (1, 12, 12)
    s2 = (2, 9, 10)
    return [
        ("identity", lambda: Identity(s2)),
        ("gradient", lambda: Gradient(s2)),
        ("blur-circular-gauss", lambda: Blur(s2, gaussian_kernel((3, 5), (0.8, 1.3)), "circular")),
        ("blur-circular-even", lambda: Blur(s2, gaussian_kernel((4, 2), 1.0), "circular")),
        ("blur-zero-odd", lambda: Blur(s2, gaussian_kernel((5, 3), 1.0), "zero")),
        ("blur-zero-even-asym", lambda: Blur(s2, _asym_kernel(), "zero")),
        ("blur-zero-motion", lambda: Blur(s12, "motion", "zero")),
        ("radon-sparse", lambda: Radon(12, n_angles=10, method="sparse")),
        ("radon-matrix-free", lambda: Radon(12, n_angles=10, method="matrix_free")),
        ("radon-limited-rect", lambda: Radon((9, 12), n_angles=7, angle_range=(0, 2 * math.pi / 3),
                                             n_detectors=15, method="sparse")),
        ("radon-mf-rect", lambda: Radon((9, 12), angles=[0.1, 0.7, 1.9, 2.8], n_detectors=14,
                                        method="matrix_free")),
        ("radon-bilinear-sparse", lambda: Radon((9, 12), n_angles=8, method="sparse", model="bilinear")),
        ("radon-bilinear-mf", lambda: Radon(12, n_angles=6, n_detectors=15, method="matrix_free",
                                            model="bilinear")),
        ("radon-fan-sparse", lambda: Radon(geometry=FanBeamGeometry(12, 10, 21, 2.0, 24.0, 24.0),
                                           method="sparse")),
        ("radon-fan-matrix-free", lambda: Radon(geometry=FanBeamGeometry(12, 10, 21, 2.0, 24.0, 24.0),
                                                method="matrix_free")),
        ("radon-fan-short-offset-rect", lambda: Radon(geometry=FanBeamGeometry(
            (9, 12), 9, 19, 1.5, 20.0, 10.0, pixel_size=0.8, angle_range=(0.3, 0.3 + math.pi + 1.2),
            detector_offset=0.7), method="sparse")),
        ("radon-fan-mf-virtual-detector", lambda: Radon(geometry=FanBeamGeometry(
            (12, 9), None, 17, 1.0, 30.0, 0.0, pixel_size=1.1, angles=[0.2, 1.3, 2.9, 4.0, 5.5]),
            method="matrix_free")),
        ("radon-parallel-fine-bins-mf", lambda: Radon(geometry=ParallelBeamGeometry(
            12, 6, 25, detector_spacing=0.6, detector_offset=0.2), method="matrix_free")),
        ("sinogram-ramp-sqrt", lambda: SinogramFilter((1, 5, 13))),
        ("sinogram-hann", lambda: SinogramFilter((1, 4, 8), "hann", power=1.0, frequency_scaling=0.8)),
        ("radon-ramp-weighted", lambda: SinogramFilter((1, 8, 17)) @ Radon(12, n_angles=8, method="sparse")),
        ("mask", lambda: Mask(s2, random_mask((9, 10), 0.6, seed=1))),
        ("fourier-random", lambda: SubsampledFourier(s2, sampling_mask((9, 10), "random", 2.0, seed=2))),
        ("fourier-radial", lambda: SubsampledFourier(s12, sampling_mask((12, 12), "radial", 3.0, seed=3))),
        ("blur-composed-mask", lambda: Mask(s2, random_mask((9, 10), 0.5, seed=4)) @ Blur(s2, "box", "zero")),
        ("radon-composed-blur", lambda: Radon(12, n_angles=8, method="sparse") @ Blur(s12, "gaussian", "circular")),
        ("sum-blur-identity", lambda: Blur(s2, box_kernel((2, 3)), "circular") + 0.5 * Identity(s2)),
        ("adjoint-of-radon", lambda: Radon(12, n_angles=6, method="matrix_free").T),
        ("difference-gradient-normal", lambda: Gradient(s2).T @ Gradient(s2) - Identity(s2)),
    ]


def _asym_kernel() -> torch.Tensor:
    """A 4x2 kernel with no symmetry (and a negative entry): catches flipped/shifted adjoints."""
    return torch.tensor([[0.1, 0.3], [0.0, 0.2], [0.25, 0.15], [0.05, -0.05]], dtype=torch.float64)


OPERATOR_CASES: list[tuple[str, Callable[[], LinearOperator]]] = _cases()
