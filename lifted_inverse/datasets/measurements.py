"""Read measurements the user already has: HDF5 (this project's ``data`` files, deepinv-style
and LoDoPaB-CT-style), ``.npy``, ``.npz`` and TIFF arrays.

:func:`read_array` returns the raw array of one file (all samples, or sample ``index``) with the
file's provenance; :func:`as_sinograms` and :func:`as_images` turn it into a batch for an operator.
Every error is a one-line ``ValueError("field: why")`` naming the option at fault
(``measurement``, ``key``, ``index``, ``layout``, ``ground_truth``).

Formats (by suffix; HDF5 files are also checked by their signature):

* ``lifted-inverse data`` files: datasets ``x`` (ground truth) and ``y`` with the operator spec
  and noise model in the attributes (:mod:`.hdf5`); the operator is rebuilt from the file.
* deepinv-style HDF5: ``x_train`` / ``y_train``, ``x_test`` / ``y_test`` (the operator from flags).
* LoDoPaB-CT-style HDF5: one dataset ``data`` of sinograms ``(N, angles, detectors)``.
* ``.npy`` / ``.npz`` (one array, or ``key``) / ``.tif`` ``.tiff``: one measurement or a stack.

Sinogram conventions. This project's :class:`~lifted_inverse.operators.Radon` writes
``(1, angles, detectors)`` in the geometry of ``skimage.transform.radon(image, theta,
circle=True)`` (unit pixel and detector spacing, rotation centre at pixel ``(H//2, W//2)``,
detector ``d`` at offset ``d - D//2``, ``D = H = W`` for ``circle=True``); skimage returns
``(detectors, angles)`` with ``theta`` in degrees. Hence, for a square ``N x N`` image,

    skimage.transform.radon(img, theta_deg, circle=True)[d, a] == Radon(N, angles=deg2rad(theta_deg),
                                                                      n_detectors=N)(img)[0, a, d]

up to the interpolation of the two discretisations (0.3 % relative L2 on a 64x64 image): same
angle origin and direction, same detector orientation, same pixel scale, no flip. So a skimage
sinogram is read with ``layout='detectors-angles'``; ASTRA's parallel-beam sinograms are
``(angles, detectors)`` (``layout='angles-detectors'``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ARRAY_SUFFIXES = (".npy", ".npz", ".tif", ".tiff")
LAYOUTS = ("angles-detectors", "detectors-angles")
#: HDF5 measurement datasets tried in this order when no key is named
MEASUREMENT_KEYS = ("y", "y_test", "y_train", "data")
#: the ground-truth dataset paired with each measurement dataset
PAIRED_KEYS = {"y": "x", "y_test": "x_test", "y_train": "x_train", "data": "data"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class RawArray:
    """An array read from a file: ``data`` (N, ...) float64 (one sample read with ``index`` keeps
    N = 1), its ``source`` (path, format, key, index, n_total) and ``attrs``: for this project's
    files the decoded provenance (``operator`` record, ``noise``, ...), else ``{}``."""

    data: np.ndarray
    source: dict
    attrs: dict = field(default_factory=dict)
    stacked: bool = True

    @property
    def is_project_file(self) -> bool:
        return self.source.get("format") == "lifted-inverse"


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == _HDF5_SIGNATURE


def _check_index(index: int | None, n: int, path: Path, what: str) -> None:
    if index is not None and not 0 <= index < n:
        raise ValueError(f"index: {index} is out of range for the {n} samples of {what} in {str(path)!r}")


def _finite(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"{what}: {str(path)!r} holds {data.dtype} values, expected real numbers")
    data = data.astype(np.float64, copy=False)
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{what}: {str(path)!r} holds {bad} NaN or Inf values")
    return data


def _read_hdf5(path: Path, key: str | None, index: int | None, what: str, keys: tuple) -> RawArray:
    import h5py

    from .hdf5 import MeasurementDataset

    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f if isinstance(f[k], h5py.Dataset)]
            if key is None:
                key = next((k for k in keys if k in names), None)
                if key is None and len(names) == 1:
                    key = names[0]
                if key is None:
                    raise ValueError(f"{what}: {str(path)!r} holds no dataset named {' / '.join(keys)} "
                                     f"(it holds {names or 'none'}); name one with --key")
            elif key not in names:
                field_name = "key" if what == "measurement" else what
                raise ValueError(f"{field_name}: {str(path)!r} has no dataset {key!r} (it holds {names or 'none'})")
            dset = f[key]
            n = int(dset.shape[0]) if dset.ndim else 1
            _check_index(index, n, path, f"dataset {key!r}")
            data = np.asarray(dset[index] if index is not None else dset[()])
            is_project = "operator" in f.attrs and "format_version" in f.attrs and key in ("x", "y")
    except OSError as err:
        raise ValueError(f"{what}: {str(path)!r} is not a readable HDF5 file ({err})") from None
    attrs = MeasurementDataset(path).attrs if is_project else {}
    if index is not None:
        data = data[None]
    fmt = "lifted-inverse" if is_project else ("deepinv" if key.endswith(("_train", "_test")) else "hdf5")
    return RawArray(_finite(data, path, what), {"path": str(path), "format": fmt, "key": key,
                                               "index": index, "n_total": n}, attrs)


def _read_plain(path: Path, key: str | None, what: str) -> tuple[np.ndarray, str | None]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if key is None:
                    if len(names) != 1:
                        raise ValueError(f"{what}: {str(path)!r} holds arrays {names}; name one with --key")
                    key = names[0]
                elif key not in names:
                    field_name = "key" if what == "measurement" else what
                    raise ValueError(f"{field_name}: {str(path)!r} has no array {key!r} (it holds {names})")
                return z[key], key
        import tifffile

        try:
            return tifffile.imread(path), None
        except tifffile.TiffFileError as err:
            raise ValueError(f"{what}: {str(path)!r} is not a readable TIFF file ({err})") from None
    except ValueError as err:
        if str(err).startswith((f"{what}:", "key:")):
            raise
        raise ValueError(f"{what}: {str(path)!r} is not a readable {suffix} file ({err})") from None
    except (OSError, EOFError, KeyError) as err:
        raise ValueError(f"{what}: {str(path)!r} is not a readable {suffix} file ({err})") from None


def read_array(path: str | os.PathLike, key: str | None = None, index: int | None = None,
               what: str = "measurement", min_ndim: int = 2) -> RawArray:
    """The array of ``path`` as float64: an HDF5 dataset (``key``, or the first of ``keys``
    present: :data:`MEASUREMENT_KEYS`, or the only dataset), a ``.npy``, a ``.npz`` member
    (``key`` or the only one) or a TIFF page stack. An array of ``min_ndim`` dimensions is one
    sample (returned with N = 1, ``stacked=False``); more dimensions are a stack along axis 0.
    ``index`` picks one sample. ``what`` names the option in errors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES or (suffix not in ARRAY_SUFFIXES and _is_hdf5(path)):
        if not _is_hdf5(path):
            raise ValueError(f"{what}: {str(path)!r} is not an HDF5 file (no HDF5 signature)")
        keys = MEASUREMENT_KEYS if what == "measurement" else ()
        raw = _read_hdf5(path, key, index, what, keys)
        if index is None and raw.data.ndim == min_ndim:  # a dataset holding one measurement
            raw.data, raw.stacked, raw.source["n_total"] = raw.data[None], False, 1
        return raw
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"{what}: {str(path)!r} has an unknown type; expected HDF5 "
                         f"({', '.join(HDF5_SUFFIXES)}) or {', '.join(ARRAY_SUFFIXES)}")
    data, key = _read_plain(path, key, what)
    data = _finite(np.asarray(data), path, what)
    if data.ndim < min_ndim:
        raise ValueError(f"{what}: {str(path)!r} holds an array of shape {data.shape}, expected at least "
                         f"{min_ndim} dimensions")
    stacked = data.ndim > min_ndim
    if not stacked:
        data = data[None]
    n = data.shape[0]
    _check_index(index, n, path, "the stack")
    if index is not None:
        data = data[index:index + 1]
    fmt = {".npy": "npy", ".npz": "npz", ".tif": "tiff", ".tiff": "tiff"}[suffix]
    return RawArray(data, {"path": str(path), "format": fmt, "key": key, "index": index, "n_total": n},
                    stacked=stacked)


def as_sinograms(raw: RawArray, layout: str) -> np.ndarray:
    """Sinograms ``(N, 1, angles, detectors)`` from ``raw.data`` of shape ``(N, r, c)`` or
    ``(N, 1, r, c)`` in ``layout`` ``'angles-detectors'`` (this project, ASTRA, LoDoPaB) or
    ``'detectors-angles'`` (``skimage.transform.radon``, transposed: module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    data = raw.data
    if data.ndim == 4 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim != 3:
        raise ValueError(f"measurement: {raw.source['path']!r} holds sinograms of shape {raw.data.shape[1:]}, "
                         "expected 2-D (rows, columns) ones")
    if layout == "detectors-angles":
        data = data.transpose(0, 2, 1)
    return np.ascontiguousarray(data)[:, None]


def as_images(raw: RawArray, channels: int = 1) -> np.ndarray:
    """Images ``(N, C, H, W)`` from ``raw.data`` of shape ``(N, H, W)`` (C = 1) or ``(N, C, H, W)``."""
    data = raw.data
    if data.ndim == 3 and channels == 1:
        data = data[:, None]
    if data.ndim != 4:
        raise ValueError(f"measurement: {raw.source['path']!r} holds samples of shape {raw.data.shape[1:]}, "
                         f"expected images (H, W) or (C, H, W)")
    return np.ascontiguousarray(data)


def read_angles(path: str | os.PathLike, unit: str) -> np.ndarray:
    """Projection angles in radians from a text (whitespace or comma separated) or ``.npy`` file,
    given in ``unit`` ``'deg'`` or ``'rad'``."""
    path = Path(path)
    if unit not in ("deg", "rad"):
        raise ValueError(f"angle_unit: expected deg or rad, got {unit!r}")
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ValueError(f"angles_file: cannot read angles from {str(path)!r} ({err})") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"angles_file: {str(path)!r} holds no angles or non-finite ones")
    return np.deg2rad(values) if unit == "deg" else values
