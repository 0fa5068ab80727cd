"""2-D CT acquisition geometries in physical units: parallel beam and fan beam (flat detector).

Coordinates. Every length (pixel size, detector spacing and offset, source and detector
distances) is in one unit of the caller's choice. The image has ``H x W`` square pixels of side
``p`` (``pixel_size``); pixel ``(r, c)`` has its centre at ``x = ((r - c_r) p, (c - c_c) p)``
(row, column) with the rotation centre at the pixel index ``(c_r, c_c) = (H//2, W//2)``. An angle
``θ`` defines the unit vectors

    e_θ = (cos θ, sin θ),     n_θ = (-sin θ, cos θ)       (row, column components),

and detector bin ``d`` of ``D`` has the signed position ``u_d = (d - D//2) Δu + o`` along
``n_θ`` (``Δu``: ``detector_spacing``, ``o``: ``detector_offset``).

* :class:`ParallelBeamGeometry`: ray ``(θ, d)`` is the line ``{u_d n_θ + t e_θ : t ∈ R}``
  (with ``p = Δu = 1``, ``o = 0`` this is the convention of ``skimage.transform.radon``).
* :class:`FanBeamGeometry`: the source sits at ``S_β = -R_s e_β`` and the flat detector is the
  line through ``R_d e_β`` along ``n_β`` (``R_s``: ``source_origin``, ``R_d``:
  ``origin_detector``). Ray ``(β, d)`` is the segment from ``S_β`` to ``R_d e_β + u_d n_β``: its
  direction is ``e_{β+γ_d}`` with fan angle ``γ_d = atan(u_d / (R_s + R_d))``, and it passes the
  rotation centre at the signed distance ``R_s sin γ_d`` (along ``n_{β+γ_d}``). The conjugate ray
  (the same line, reversed) is ``(β + π + 2γ, -γ)``. As ``R_s → ∞`` with ``u_d`` fixed at the
  isocentre the fan becomes the parallel geometry with ``θ = β``.

A projector (:class:`~.radon.Radon`) approximates ``∫ f(x) dℓ`` along each ray in length units,
so ``R f`` scales with ``p``; :meth:`as_dict` / :func:`geometry_from_dict` give the geometry as a
JSON-able mapping (the ``'ct'`` operator spec of :mod:`.registry` stores it that way).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["GEOMETRY_KINDS", "FanBeamGeometry", "ParallelBeamGeometry", "diagonal_detectors",
           "fan_detectors", "geometry_from_dict", "parse_image_size", "uniform_angles"]

GEOMETRY_KINDS = ("parallel", "fan")


def parse_image_size(image_size) -> tuple[int, int]:
    """``image_size`` (``N``, ``(H, W)`` or ``(1, H, W)``) as ``(H, W)``, each >= 2."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        shape = (int(image_size), int(image_size))
    else:
        try:
            shape = tuple(int(s) for s in image_size)
        except TypeError:
            raise ValueError(f"image_size: expected an int or (H, W), got {image_size!r}") from None
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"image_size: expected an int or (H, W) with H, W >= 2, got {image_size!r}")
    return shape


def diagonal_detectors(image_size) -> int:
    """``ceil(hypot(H, W))`` (``ceil(sqrt(2) N)`` for ``N x N``): unit detector bins spanning the
    image diagonal, so every pixel is seen at every angle. The one default parallel CT geometry."""
    h, w = parse_image_size(image_size)
    return math.ceil(math.hypot(h, w))


def fan_detectors(image_size, detector_spacing: float, source_origin: float, origin_detector: float,
                  pixel_size: float = 1.0) -> int:
    """The fewest flat-detector bins ``D`` (odd) whose fan covers the whole image at every source
    position: the field of view ``R_s sin(atan(h/(R_s + R_d)))`` of the half-width
    ``h = (D//2) Δu`` reaches the image's farthest pixel corner ``r`` from the rotation centre,
    i.e. ``h >= (R_s + R_d) tan(asin(r/R_s))`` (the fan analogue of :func:`diagonal_detectors`)."""
    h, w = parse_image_size(image_size)
    p = _positive(pixel_size, "pixel_size")
    reach = math.hypot(max(h // 2, h - 1 - h // 2) + 0.5, max(w // 2, w - 1 - w // 2) + 0.5) * p
    rs = _positive(source_origin, "source_origin")
    if reach >= rs:
        raise ValueError(f"source_origin: the source must lie outside the image (> {reach:g}), got {source_origin!r}")
    half = (rs + _finite(origin_detector, "origin_detector")) * math.tan(math.asin(reach / rs))
    return 2 * math.ceil(half / _positive(detector_spacing, "detector_spacing") - 1e-9) + 1


def uniform_angles(n_angles: int, angle_range: Sequence[float]) -> np.ndarray:
    """``lo + (hi - lo) k / n`` for ``k = 0 .. n-1`` (end point excluded), float64."""
    lo, hi = (float(a) for a in angle_range)
    return lo + (hi - lo) * np.arange(n_angles, dtype=np.float64) / n_angles


def _positive(value, name: str, integer: bool = False):
    ok_type = (isinstance(value, (int, np.integer)) if integer
               else isinstance(value, (int, float, np.integer, np.floating)))
    if not ok_type or isinstance(value, bool) or not math.isfinite(float(value)) or value <= 0:
        kind = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _finite(value, name: str) -> float:
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool)
            or not math.isfinite(float(value))):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


#: angle count when none is given: a sparse-view scan; the same for ``Radon``, ``make_operator("ct", …)``
#: and the command line
DEFAULT_N_ANGLES = 60


def _parse_angles(n_angles, angles, angle_range, default_range: float):
    """``(angles, uniform, (lo, hi) or None)``; ``angle_range`` is ``hi`` (from 0) or ``(lo, hi)``."""
    if angles is not None:
        if hasattr(angles, "detach"):
            angles = angles.detach().cpu().numpy()
        ang = np.asarray(angles, dtype=np.float64).reshape(-1)
        if ang.size == 0:
            raise ValueError("angles: expected at least one angle, got an empty array")
        if not np.all(np.isfinite(ang)):
            raise ValueError("angles: contains NaN or Inf values")
        return ang, False, None
    n = DEFAULT_N_ANGLES if n_angles is None else n_angles
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n_angles: expected a positive integer, got {n_angles!r}")
    rng = (0.0, default_range) if angle_range is None else angle_range
    if isinstance(rng, (int, float, np.integer, np.floating)) and not isinstance(rng, bool):
        rng = (0.0, float(rng))
    try:
        rng = tuple(float(a) for a in rng)
    except (TypeError, ValueError):
        raise ValueError(f"angle_range: expected hi or (lo, hi), got {angle_range!r}") from None
    if len(rng) != 2 or not all(math.isfinite(a) for a in rng) or not rng[1] > rng[0]:
        raise ValueError(f"angle_range: expected finite (lo, hi) with hi > lo, got {angle_range!r}")
    return uniform_angles(int(n), rng), True, rng


class _BeamGeometry:
    """What both geometries share: image grid, angles, detector (see the module docstring)."""

    kind = ""

    def __init__(self, image_size, n_angles, n_detectors, detector_spacing, pixel_size, angles,
                 angle_range, detector_offset, default_range: float):
        self.image_shape = parse_image_size(image_size)
        self.angles, self.uniform, self.angle_range = _parse_angles(n_angles, angles, angle_range,
                                                                    default_range)
        self.n_angles = int(self.angles.size)
        self.n_detectors = _positive(n_detectors, "n_detectors", integer=True)
        self.detector_spacing = _positive(detector_spacing, "detector_spacing")
        self.pixel_size = _positive(pixel_size, "pixel_size")
        self.detector_offset = _finite(detector_offset, "detector_offset")

    @property
    def angle_step(self) -> float:
        """Quadrature weight ``Δθ`` per angle: ``(hi - lo)/A`` for uniform angles; for explicit
        angles ``π/A`` (parallel beam) or, for a fan, the mean gap of the sorted angles
        ``(max - min)/(A - 1)`` (``2π`` for a single angle)."""
        if self.uniform:
            return (self.angle_range[1] - self.angle_range[0]) / self.n_angles
        if self.kind == "fan":
            a = self.angles
            return float(a.max() - a.min()) / (a.size - 1) if a.size > 1 else 2 * math.pi
        return math.pi / self.n_angles

    def detector_positions(self) -> np.ndarray:
        """``u_d = (d - D//2) Δu + o`` for ``d = 0 .. D-1`` (length units), float64."""
        d = np.arange(self.n_detectors, dtype=np.float64) - self.n_detectors // 2
        return d * self.detector_spacing + self.detector_offset

    def half_width(self) -> float:
        """``(D//2) Δu - |o|``: the extent of the detector on either side of its centre line
        (``D//2`` bins, as far as bin 0 lies), less the offset."""
        return max((self.n_detectors // 2) * self.detector_spacing - abs(self.detector_offset), 0.0)

    def centre(self) -> tuple[int, int]:
        """The rotation centre as a pixel index ``(H//2, W//2)``."""
        return self.image_shape[0] // 2, self.image_shape[1] // 2

    def _common_dict(self) -> dict:
        out = {"geometry": self.kind}
        if self.uniform:
            out.update(n_angles=self.n_angles, angle_range=list(self.angle_range))
        else:
            out["angles"] = [float(a) for a in self.angles]
        out.update(n_detectors=self.n_detectors, detector_spacing=self.detector_spacing,
                   detector_offset=self.detector_offset, pixel_size=self.pixel_size)
        return out

    def key(self) -> tuple:
        """A hashable identity (equal keys: the same rays)."""
        digest = hashlib.sha1(np.ascontiguousarray(self.angles).tobytes()).hexdigest()
        params = tuple(v for k, v in sorted(self.as_dict().items()) if k not in ("angles", "angle_range"))
        return (self.kind, self.image_shape, digest, params)

    def as_dict(self) -> dict:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return (type(other) is type(self) and self.image_shape == other.image_shape
                and self.key() == other.key())

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()
                           if k not in ("geometry", "angles"))
        return f"{type(self).__name__}(image_size={self.image_shape}, {params})"


class ParallelBeamGeometry(_BeamGeometry):
    """Parallel-beam geometry (module docstring): ``n_angles`` uniform in ``angle_range`` (``hi`` or
    ``(lo, hi)``, default ``(0, π)``, end excluded) or explicit ``angles`` (radians);
    ``n_detectors`` bins of ``detector_spacing`` (default: :func:`diagonal_detectors`, the rays
    cover the whole image for unit spacing and pixels), shifted by ``detector_offset``."""

    kind = "parallel"

    def __init__(self, image_size, n_angles: int | None = None, n_detectors: int | None = None,
                 detector_spacing: float = 1.0, pixel_size: float = 1.0, angles=None,
                 angle_range=math.pi, detector_offset: float = 0.0):
        if n_detectors is None:
            h, w = parse_image_size(image_size)
            p = _positive(pixel_size, "pixel_size")
            n_detectors = math.ceil(math.hypot(h, w) * p / _positive(detector_spacing, "detector_spacing")
                                    - 1e-9)
        super().__init__(image_size, n_angles, n_detectors, detector_spacing, pixel_size, angles,
                         angle_range, detector_offset, math.pi)

    def fov_radius(self) -> float:
        """Radius (length units) of the disc about the rotation centre seen at every angle:
        :meth:`half_width`."""
        return self.half_width()

    def as_dict(self) -> dict:
        """JSON-able parameters (``geometry_from_dict`` inverts it, with the image size)."""
        return self._common_dict()


class FanBeamGeometry(_BeamGeometry):
    """Fan-beam geometry with a flat detector (module docstring).

    Args:
        image_size: ``N`` or ``(H, W)``.
        n_angles: source positions ``β``, uniform in ``angle_range`` (``hi`` from 0 or ``(lo, hi)``;
            default ``2π``, end excluded); or explicit ``angles`` (radians).
        n_detectors, detector_spacing: the flat detector's bins ``D`` and their pitch ``Δu``
            (length units, at the detector, not at the isocentre).
        source_origin, origin_detector: ``R_s`` and ``R_d`` (``R_s`` > the image half-diagonal,
            so the source lies outside the image; ``R_d >= 0``, and the detector may be virtual,
            inside the image: every ray is integrated as a full line through the image).
        pixel_size: ``p``. detector_offset: ``o``, a shift of the detector along ``n_β``.
    """

    kind = "fan"

    def __init__(self, image_size, n_angles: int | None, n_detectors: int, detector_spacing: float,
                 source_origin: float, origin_detector: float, pixel_size: float = 1.0, angles=None,
                 angle_range=2 * math.pi, detector_offset: float = 0.0):
        super().__init__(image_size, n_angles, n_detectors, detector_spacing, pixel_size, angles,
                         angle_range, detector_offset, 2 * math.pi)
        self.source_origin = _positive(source_origin, "source_origin")
        self.origin_detector = _finite(origin_detector, "origin_detector")
        if self.origin_detector < 0:
            raise ValueError(f"origin_detector: expected a number >= 0, got {origin_detector!r}")
        h, w = self.image_shape
        half_diag = max(math.hypot(max(h // 2, h - 1 - h // 2) + 0.5, max(w // 2, w - 1 - w // 2) + 0.5)
                        * self.pixel_size, 0.0)
        if self.source_origin <= half_diag:
            raise ValueError(f"source_origin: the source must lie outside the image (> {half_diag:g} "
                             f"length units from the centre), got {source_origin!r}")

    @property
    def source_detector(self) -> float:
        """``R_s + R_d``."""
        return self.source_origin + self.origin_detector

    @property
    def magnification(self) -> float:
        """``(R_s + R_d) / R_s``: detector positions divided by it are positions at the isocentre."""
        return self.source_detector / self.source_origin

    def fan_angles(self) -> np.ndarray:
        """``γ_d = atan(u_d / (R_s + R_d))`` per bin (radians)."""
        return np.arctan(self.detector_positions() / self.source_detector)

    def fan_angle(self) -> float:
        """Half fan angle ``γ_max = max_d |γ_d|`` (a short scan covers ``π + 2 γ_max``)."""
        return float(np.abs(self.fan_angles()).max())

    def fov_radius(self) -> float:
        """Radius of the disc every source position sees: ``R_s sin(atan(h / (R_s + R_d)))`` with
        ``h`` the detector's :meth:`half_width`."""
        return float(self.source_origin * math.sin(math.atan(self.half_width() / self.source_detector)))

    def as_dict(self) -> dict:
        """JSON-able parameters (``geometry_from_dict`` inverts it, with the image size)."""
        out = self._common_dict()
        out.update(source_origin=self.source_origin, origin_detector=self.origin_detector)
        return out


def geometry_from_dict(image_size, params: Mapping) -> ParallelBeamGeometry | FanBeamGeometry:
    """The geometry ``params`` (an :meth:`as_dict` result, ``'geometry'`` naming the kind) for
    images of ``image_size``."""
    kw = dict(params)
    kind = kw.pop("geometry", "parallel")
    if kind not in GEOMETRY_KINDS:
        raise ValueError(f"geometry: expected one of {GEOMETRY_KINDS}, got {kind!r}")
    if "angle_range" in kw and kw["angle_range"] is not None and not np.isscalar(kw["angle_range"]):
        kw["angle_range"] = tuple(kw["angle_range"])
    kw.setdefault("n_angles", None)  # absent when explicit angles are given
    cls = FanBeamGeometry if kind == "fan" else ParallelBeamGeometry
    return cls(image_size, **kw)
