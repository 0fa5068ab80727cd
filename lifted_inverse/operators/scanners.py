"""Named CT scanner presets: geometry (as a ``'ct'`` operator spec) and dose levels.

* ``'lidc'``: the LIDC-IDRI setting of the LION toolbox (learned CT reconstruction benchmarks):
  fan beam with a flat detector, a 300 mm field of 512 x 512 pixels (``p = 300/512`` mm),
  900 bins of 1 mm, source-origin 575 mm, source-detector 1050 mm (origin-detector 475 mm),
  360 source positions over ``[0, 2π)``; photon counts ``I_0`` per detector bin 10000 (full),
  3500 (low) and 1000 (extremely low dose) for the transmission-Poisson noise model. At another
  image size the field of view is kept (``p = 300/N`` mm).
* ``'parallel'``: the default ``'ct'`` operator (:mod:`.registry`): parallel beam, 60 angles over
  ``[0, π)``, unit pixels and bins, detectors spanning the image diagonal; no dose levels.

``scanner_spec(name, image_size)`` is the operator spec (``operator_from_spec(spec, (1, N, N))``
builds the projector); ``SCANNERS[name].photon_counts`` the dose levels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .registry import resolve_spec

__all__ = ["SCANNERS", "SCANNER_NAMES", "Scanner", "scanner_spec"]


@dataclass(frozen=True)
class Scanner:
    """A preset: ``spec(image_size)`` gives its ``'ct'`` operator spec; ``image_size`` is its
    native size (``None``: any); ``photon_counts`` maps dose levels to ``I_0``."""

    name: str
    description: str
    image_size: int | None
    photon_counts: dict[str, float] = field(default_factory=dict)

    def spec(self, image_size: int | None = None) -> dict:
        size = self.image_size if image_size is None else image_size
        if self.name == "lidc":
            if not isinstance(size, int) or isinstance(size, bool) or size < 2:
                raise ValueError(f"image_size: expected an integer >= 2, got {image_size!r}")
            return resolve_spec({"name": "ct", "geometry": "fan", "n_angles": 360,
                                 "angle_range": [0.0, 2 * math.pi], "n_detectors": 900,
                                 "detector_spacing": 1.0, "pixel_size": 300.0 / size,
                                 "source_origin": 575.0, "origin_detector": 475.0},
                                (1, size, size))
        base = {"name": "ct"}
        return base if size is None else resolve_spec(base, (1, size, size))


SCANNERS: dict[str, Scanner] = {
    "lidc": Scanner("lidc", "LIDC-IDRI (LION): fan beam, 512², 900 x 1 mm bins, source-origin "
                    "575 mm, source-detector 1050 mm, 360 angles over 2π", 512,
                    {"full": 10000.0, "low": 3500.0, "extremely_low": 1000.0}),
    "parallel": Scanner("parallel", "parallel beam, 60 angles over π, unit bins spanning the "
                        "image diagonal (the default 'ct' operator)", None),
}
SCANNER_NAMES = tuple(SCANNERS)


def scanner_spec(name: str, image_size: int | None = None) -> dict:
    """The ``'ct'`` operator spec of scanner ``name`` for ``image_size x image_size`` images
    (default: the scanner's native size; ``'parallel'`` without a size gives the unresolved
    ``{"name": "ct"}``, resolved by ``operator_from_spec`` for the images it meets)."""
    if name not in SCANNERS:
        raise ValueError(f"scanner: unknown scanner {name!r}; expected one of {', '.join(SCANNER_NAMES)}")
    return SCANNERS[name].spec(image_size)
