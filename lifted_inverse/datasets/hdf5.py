"""HDF5 files of (ground truth ``x``, measurement ``y = noise(A x)``) pairs with provenance.

Two layouts are written and read:

- ``'data'`` (format 1): dataset ``x``: (N, *A.in_shape), dataset ``y``: (N, *A.out_shape);
- ``'deepinv'`` (the layout of ``deepinv.datasets.generate_dataset``): ``x_train`` / ``y_train``
  and ``x_test`` / ``y_test``, the same shapes per sample.

Every array dataset is chunked one sample per chunk and stored with a Fletcher-32 checksum per
chunk, so a byte changed on disk is reported (naming the dataset) when its chunk is read instead
of being returned as data. Attributes: ``operator`` (JSON of :func:`operator_record`: the registry
spec, from which :meth:`MeasurementDataset.operator` rebuilds the operator), ``operator_class``,
``noise`` (JSON of ``noise.to_dict()`` or ``null``), ``seed``, ``dataset`` (class name),
``n_samples``, ``layout``, ``created`` (UTC ISO 8601), ``lifted_inverse_version``,
``format_version``.

Transmission noise (a noise model with ``simulate``, e.g.
:class:`~lifted_inverse.operators.noise.TransmissionPoissonNoise`): ``y`` holds the post-log line
integrals and the pre-log detector counts are stored next to it, same shape, under
:data:`COUNTS_KEYS` (``counts``; ``counts_train`` / ``counts_test``).

Files are written to a temporary file and moved into place, so a crash never leaves half a file.

Public readers (stable): :class:`MeasurementDataset` (``path, split=None, *, require_x=True,
require_y=True, name="measurements"``; ``len``, ``[i]``, :meth:`~MeasurementDataset.read`,
:meth:`~MeasurementDataset.operator`, ``attrs``, ``layout``, ``x_key`` / ``y_key``,
``x_shape`` / ``y_shape``, ``splits``), :func:`file_layout` and :func:`operator_from_record`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io import atomic_path
from ..operators.base import LinearOperator

FORMAT_VERSION = 1
#: dataset names of each layout: ``{layout: {split: (ground-truth key, measurement key)}}``
LAYOUT_KEYS = {"data": {"train": ("x", "y")},
               "deepinv": {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}}
LAYOUTS = tuple(LAYOUT_KEYS)
#: measurement key -> the dataset of its pre-log counts (transmission noise)
COUNTS_KEYS = {"y": "counts", "y_train": "counts_train", "y_test": "counts_test"}
_ALIASES = {"image_size": ("image_shape",), "shape": ("in_shape",)}  # names operators keep
_MAX_INLINE = 1024  # arrays up to this many entries are stored verbatim in the description


def _jsonable(value: Any) -> Any:
    """A JSON-serialisable stand-in for ``value`` (large arrays become shape/dtype/sha256)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, LinearOperator):
        return describe(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.resolve_conj().numpy() if not value.is_sparse else value.to_dense().numpy()
    if isinstance(value, np.ndarray):
        if value.size <= _MAX_INLINE and not np.iscomplexobj(value):
            return value.tolist()
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return repr(value)[:200]


def describe(op: LinearOperator) -> dict:
    """Describe an operator by its class and constructor parameters, read back from the object.

    For every parameter of ``type(op).__init__`` an attribute of the same name (or with a leading
    underscore) is looked up; parameters the object does not keep are omitted. Nested operators
    (compositions, sums) are described recursively. Returns
    ``{"class", "module", "in_shape", "out_shape", "parameters": {...}}``.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"operator: expected a LinearOperator, got {type(op).__name__}")
    params: dict[str, Any] = {}
    try:
        signature = inspect.signature(type(op).__init__)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        signature = None
    if signature is not None:
        for name, p in signature.parameters.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            for attr in (name, f"_{name}", *_ALIASES.get(name, ())):
                if hasattr(op, attr):
                    params[name] = _jsonable(getattr(op, attr))
                    break
    # children of algebraic combinations (Composition.outer/inner, Sum.a/b, Scaled.op, ...)
    for name, child in op.named_children():
        if isinstance(child, LinearOperator) and name not in params:
            params[name] = describe(child)
    return {"class": type(op).__name__, "module": type(op).__module__,
            "in_shape": list(op.in_shape), "out_shape": list(op.out_shape), "parameters": params}


def operator_record(op: LinearOperator) -> dict:
    """What files store about ``op``: ``{"class", "in_shape", "out_shape", "spec"}`` with its
    registry spec (:func:`~lifted_inverse.operators.registry.spec_of`), from which
    :func:`operator_from_record` rebuilds it; an operator the registry cannot name (a composition,
    a sum, ...) is recorded by :func:`describe` instead (provenance only, not rebuildable)."""
    from ..operators.registry import spec_of

    try:
        spec = spec_of(op)
    except TypeError:
        return describe(op)
    return {"class": type(op).__name__, "in_shape": list(op.in_shape), "out_shape": list(op.out_shape),
            "spec": spec}


def operator_from_record(record: Mapping) -> LinearOperator:
    """The operator of an :func:`operator_record` (checked against its recorded output shape).
    Raises ``ValueError`` for a record without a spec."""
    from ..operators.registry import operator_from_spec

    if not isinstance(record, Mapping) or not isinstance(record.get("spec"), Mapping):
        kind = record.get("class") if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"operator: the record of {kind} holds no operator spec; it cannot be rebuilt")
    op = operator_from_spec(record["spec"], record["in_shape"])
    if list(op.out_shape) != list(record["out_shape"]):
        raise ValueError(f"operator: the spec rebuilds an operator with output shape {list(op.out_shape)}, "
                         f"the record says {list(record['out_shape'])}")
    return op


def describe_noise(noise: Callable | None) -> dict | None:
    """``noise.to_dict()`` if the noise model has one, ``None`` for no noise, else its class name."""
    if noise is None:
        return None
    if hasattr(noise, "to_dict"):
        return _jsonable(noise.to_dict())
    return {"class": type(noise).__name__}


def _package_version() -> str:
    from .. import __version__

    return __version__


def _first_tensor(item: Any) -> torch.Tensor:
    """Datasets may return ``x`` or ``(x, label, ...)``; take ``x``."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not isinstance(item, torch.Tensor):
        raise TypeError(f"dataset: items must be tensors or tuples starting with one, got {type(item).__name__}")
    return item


def _collate(items):
    return torch.stack([_first_tensor(i) for i in items])


def _checked_dataset(f, name: str, shape: tuple, dtype) -> Any:
    """An empty dataset ``name`` of ``shape``, one chunk per sample (a 1-D array: one chunk), each
    chunk with a Fletcher-32 checksum (verified by HDF5 on every read)."""
    if len(shape) == 0 or 0 in shape:  # scalars and empty arrays cannot be chunked
        return f.create_dataset(name, shape=shape, dtype=dtype)
    chunks = tuple(shape) if len(shape) == 1 else (1, *shape[1:])
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fletcher32=True)


def _split_sizes(n: int, n_test: int, layout: str) -> dict[str, int]:
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or not 0 <= n_test < n:
        raise ValueError(f"n_test: expected an integer in [0, {n - 1}] (the dataset holds {n} samples), "
                         f"got {n_test!r}")
    if layout == "data":
        if n_test:
            raise ValueError("n_test: the 'data' layout has one split; a test split needs layout 'deepinv'")
        return {"train": n}
    return {"train": n - int(n_test), "test": int(n_test)} if n_test else {"train": n}


@torch.no_grad()
def make_measurements(
    dataset: Dataset,
    operator: LinearOperator,
    noise: Callable[[torch.Tensor], torch.Tensor] | None,
    path: str | os.PathLike,
    batch_size: int = 32,
    seed: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    layout: str = "data",
    n_test: int = 0,
) -> Path:
    """Write ``x_i`` and ``y_i = noise(A x_i)`` for every item of ``dataset`` to HDF5 at ``path``.

    ``dataset`` items are (C, H, W) tensors (or tuples whose first entry is one) of shape
    ``operator.in_shape``; ``noise`` is a callable ``y -> y + e`` (e.g. ``GaussianNoise``) or
    ``None``. ``seed`` is recorded (defaults to ``noise.seed`` when present); extra ``attrs`` are
    stored as JSON. Batches of ``batch_size`` go through the operator on ``device`` (default:
    the operator's). ``layout`` ``'data'`` writes ``x`` / ``y``; ``'deepinv'`` writes the first
    ``N - n_test`` items as ``x_train`` / ``y_train`` and the last ``n_test`` as ``x_test`` /
    ``y_test`` (the noise stream runs over all items in order, whatever the layout). Returns the
    path. Written atomically.
    """
    import h5py

    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a LinearOperator, got {type(operator).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset: is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    n = len(dataset)
    sizes = _split_sizes(n, n_test, layout)
    if device is None:
        probe = operator._probe_tensor()
        device = probe.device if probe is not None else torch.device("cpu")
    if seed is None:
        seed = getattr(noise, "seed", None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    path = Path(path)
    header = {
        "operator": json.dumps(operator_record(operator)),
        "operator_class": type(operator).__name__,
        "noise": json.dumps(describe_noise(noise)),
        "seed": -1 if seed is None else int(seed),
        "dataset": type(dataset).__name__,
        "n_samples": n,
        "layout": layout,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lifted_inverse_version": _package_version(),
        "format_version": FORMAT_VERSION,
    }
    for key, value in (attrs or {}).items():
        header[str(key)] = json.dumps(_jsonable(value))
    # [(first global index, split)] in file order; a batch may straddle the train/test boundary
    bounds = [(0, "train")] + ([(sizes["train"], "test")] if "test" in sizes else [])
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="measurements", unit="batch")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        start = 0
        sets: dict[str, tuple] = {}
        for batch in iterator:
            x = batch.to(device)
            y = operator(x)
            counts = None
            if hasattr(noise, "simulate"):  # transmission noise: the pre-log counts are stored too
                data = noise.simulate(y)
                y, counts = data.line_integrals, data.counts.detach().cpu().numpy()
            elif noise is not None:
                y = noise(y)
            x_np, y_np = x.cpu().numpy(), y.detach().cpu().numpy()
            if not sets:
                for split, size in sizes.items():
                    kx, ky = LAYOUT_KEYS[layout][split]
                    sets[split] = (_checked_dataset(f, kx, (size, *x_np.shape[1:]), x_np.dtype),
                                   _checked_dataset(f, ky, (size, *y_np.shape[1:]), y_np.dtype))
                    if counts is not None:
                        sets[split] += (_checked_dataset(f, COUNTS_KEYS[ky], (size, *y_np.shape[1:]), y_np.dtype),)
            for first, split in bounds:
                lo, hi = max(start, first), min(start + len(x_np), first + sizes[split])
                if lo < hi:
                    dx, dy = sets[split][:2]
                    dx[lo - first:hi - first] = x_np[lo - start:hi - start]
                    dy[lo - first:hi - first] = y_np[lo - start:hi - start]
                    if counts is not None:
                        sets[split][2][lo - first:hi - first] = counts[lo - start:hi - start]
            start += len(x_np)
        f.attrs.update(header)
    return path


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, torch.Tensor | np.ndarray],
                 attrs: Mapping[str, Any] | None = None) -> Path:
    """Write named arrays (one HDF5 dataset each, chunked one row per chunk with Fletcher-32
    checksums) and JSON-encoded attributes, atomically."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().resolve_conj().numpy()
                value = np.asarray(value)
                _checked_dataset(f, name, value.shape, value.dtype)[...] = value
            for key, value in (attrs or {}).items():
                f.attrs[str(key)] = value if isinstance(value, (int, float, str)) else json.dumps(_jsonable(value))
            f.attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            f.attrs.setdefault("lifted_inverse_version", _package_version())
    return path


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def file_layout(keys) -> str:
    """``'deepinv'`` if the dataset names ``keys`` (an open ``h5py.File`` or any container of
    names) hold a deepinv split (``x_train``, ``y_train``, ``x_test`` or ``y_test``), else
    ``'data'``."""
    deepinv = {k for split in LAYOUT_KEYS["deepinv"].values() for k in split}
    return "deepinv" if any(k in keys for k in deepinv) else "data"


class MeasurementDataset(Dataset):
    """Pairs ``(x_i, y_i)`` of one split of a file in either layout (module docstring), as
    tensors in the file's dtype, read from disk on demand: nothing is loaded beyond what is
    indexed.

    ``split``: ``None`` (the ``'data'`` layout's one split, the deepinv ``'train'`` split),
    ``'train'`` or ``'test'`` (deepinv only). ``require_x`` / ``require_y``: a file without that
    dataset is an error; when not required, an absent dataset reads as ``None`` (``x_key`` or
    ``y_key`` is then None: a file of clean images only, or of measurements only). ``name`` is
    the argument that errors name (``'data: ...'`` for ``train --data``). ``splits``: the splits
    the file holds (``('train',)`` or ``('train', 'test')``).

    The file is checked when the dataset is built (missing -> ``FileNotFoundError``; unreadable,
    truncated, not HDF5, a missing dataset, fewer than one sample dimension or ``x`` and ``y``
    of different lengths -> ``ValueError``, each naming the path) and then opened lazily on first
    access in each process, so it works with ``DataLoader`` workers. A chunk whose checksum does
    not match is a ``ValueError`` naming the dataset and the samples. ``attrs`` holds the decoded
    provenance attributes.
    """

    def __init__(self, path: str | os.PathLike, split: str | None = None, *, require_x: bool = True,
                 require_y: bool = True, name: str = "measurements"):
        import h5py

        self.path, self.name = Path(path), str(name)
        where = f"{self.name}: {str(self.path)!r}"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.name}: no such file {str(self.path)!r}")
        try:
            with h5py.File(self.path, "r") as f:
                self.layout = file_layout(f)
                splits = LAYOUT_KEYS[self.layout]
                self.split = "train" if split is None else split
                if self.split not in splits:
                    raise ValueError(f"{where} ({self.layout} layout) has no {self.split!r} split; "
                                     f"it has {sorted(splits)}")
                keys = splits[self.split]
                missing = [k for k, need in zip(keys, (require_x, require_y)) if need and k not in f]
                if missing or not any(k in f for k in keys):
                    raise ValueError(f"{where} has no dataset(s) {missing or list(keys)} "
                                     f"({self.layout} layout; it holds {sorted(f.keys())})")
                self.x_key, self.y_key = (k if k in f else None for k in keys)
                self.splits = tuple(s for s, ks in splits.items() if any(k in f for k in ks))
                lengths, shapes = {}, {}
                for key in (self.x_key, self.y_key):
                    if key is None:
                        continue
                    ds = f[key]
                    if not isinstance(ds, h5py.Dataset) or ds.ndim < 2:
                        raise ValueError(f"{where}: {key!r} must be an array (N, ...) of samples, got "
                                         f"{getattr(ds, 'shape', type(ds).__name__)}")
                    lengths[key], shapes[key] = ds.shape[0], tuple(ds.shape[1:])
                self.x_shape, self.y_shape = shapes.get(self.x_key), shapes.get(self.y_key)
                self.attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
        except OSError as err:
            raise ValueError(f"{where} is not a readable HDF5 file ({err})") from err
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{where} holds {lengths[self.x_key]} {self.x_key} but "
                             f"{lengths[self.y_key]} {self.y_key} samples")
        self._n = next(iter(lengths.values()))
        self._file = None

    def __len__(self) -> int:
        return self._n

    def operator(self) -> LinearOperator:
        """The forward operator the measurements were made with, rebuilt from the file's
        ``operator`` attribute (:func:`operator_from_record`); ``ValueError`` naming the path if the
        file records none that can be rebuilt or its shapes do not fit the datasets."""
        try:
            op = operator_from_record(self.attrs.get("operator"))
        except ValueError as err:
            raise ValueError(f"{self.name}: {str(self.path)!r}: {err}") from None
        if (self.x_shape is not None and tuple(op.in_shape) != self.x_shape) or \
                (self.y_shape is not None and tuple(op.out_shape) != self.y_shape):
            raise ValueError(f"{self.name}: {str(self.path)!r} holds {self.x_key} {self.x_shape} and "
                             f"{self.y_key} {self.y_shape}, its operator maps {op.in_shape} -> {op.out_shape}")
        return op

    def _handle(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def _read(self, key: str | None, selection, what: str) -> np.ndarray | None:
        if key is None:
            return None
        dataset = None
        try:
            dataset = self._handle()[key]
            return np.asarray(dataset[selection])
        except (OSError, KeyError) as err:
            # HDF5 reports a failed Fletcher-32 check as a failed read filter
            checked = "filter" in str(err).lower() and getattr(dataset, "fletcher32", False)
            detail = "Fletcher-32 checksum mismatch: the file is corrupted" if checked else err
            raise ValueError(f"{self.name}: cannot read {what} of dataset {key!r} in {str(self.path)!r} "
                             f"({detail})") from err

    def read(self, indices) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The samples ``indices`` (a sequence or 1-D tensor of ints, any order, repeats allowed)
        as ``(x, y)`` batches ``(len(indices), ...)``; an absent dataset gives None. Only these
        samples' chunks are read from disk."""
        ids = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64).reshape(-1)
        if ids.size and not (-self._n <= ids.min() and ids.max() < self._n):
            raise IndexError(f"{self.name}: indices out of range for {self._n} samples")
        ids = np.where(ids < 0, ids + self._n, ids)
        # h5py reads increasing, distinct indices; the batch is put back in the order asked
        unique, inverse = np.unique(ids, return_inverse=True)
        what = f"samples {unique.tolist()}" if unique.size <= 8 else f"{unique.size} samples"
        out = []
        for key in (self.x_key, self.y_key):
            if key is not None and unique.size == 0:   # h5py reads no empty selection
                a = np.empty((0, *self._handle()[key].shape[1:]), self._handle()[key].dtype)
            else:
                a = self._read(key, unique, what)
            out.append(None if a is None else torch.from_numpy(np.ascontiguousarray(a[inverse])))
        return out[0], out[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not -self._n <= index < self._n:
            raise IndexError(f"index {index} out of range for {self._n} samples")
        x, y = (self._read(k, index, f"sample {index}") for k in (self.x_key, self.y_key))
        return tuple(None if a is None else torch.from_numpy(np.asarray(a)) for a in (x, y))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):  # h5py handles cannot be pickled into DataLoader workers
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
