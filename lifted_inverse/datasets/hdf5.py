"""HDF5 files of (ground truth ``x``, measurement ``y = noise(A x)``) pairs with provenance.

Layout of a measurement file (format 1):

- dataset ``x``: (N, *A.in_shape), dataset ``y``: (N, *A.out_shape), chunked one sample per chunk;
- attributes ``operator`` (JSON of :func:`operator_record`: the registry spec, from which
  :meth:`MeasurementDataset.operator` rebuilds the operator), ``operator_class``, ``noise`` (JSON of
  ``noise.to_dict()`` or ``null``), ``seed``, ``dataset`` (class name), ``n_samples``,
  ``created`` (UTC ISO 8601), ``lifted_inverse_version``, ``format_version``.

Files are written to a temporary file and moved into place, so a crash never leaves half a file.
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
) -> Path:
    """Write ``x_i`` and ``y_i = noise(A x_i)`` for every item of ``dataset`` to HDF5 at ``path``.

    ``dataset`` items are (C, H, W) tensors (or tuples whose first entry is one) of shape
    ``operator.in_shape``; ``noise`` is a callable ``y -> y + e`` (e.g. ``GaussianNoise``) or
    ``None``. ``seed`` is recorded (defaults to ``noise.seed`` when present); extra ``attrs`` are
    stored as JSON. Batches of ``batch_size`` go through the operator on ``device`` (default:
    the operator's). Returns the path. Written atomically.
    """
    import h5py

    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a LinearOperator, got {type(operator).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset: is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if device is None:
        probe = operator._probe_tensor()
        device = probe.device if probe is not None else torch.device("cpu")
    if seed is None:
        seed = getattr(noise, "seed", None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    n = len(dataset)
    path = Path(path)
    header = {
        "operator": json.dumps(operator_record(operator)),
        "operator_class": type(operator).__name__,
        "noise": json.dumps(describe_noise(noise)),
        "seed": -1 if seed is None else int(seed),
        "dataset": type(dataset).__name__,
        "n_samples": n,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lifted_inverse_version": _package_version(),
        "format_version": FORMAT_VERSION,
    }
    for key, value in (attrs or {}).items():
        header[str(key)] = json.dumps(_jsonable(value))
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc="measurements", unit="batch")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        start = 0
        dx = dy = None
        for batch in iterator:
            x = batch.to(device)
            y = operator(x)
            if noise is not None:
                y = noise(y)
            x_np, y_np = x.cpu().numpy(), y.detach().cpu().numpy()
            if dx is None:
                dx = f.create_dataset("x", shape=(n, *x_np.shape[1:]), dtype=x_np.dtype,
                                      chunks=(1, *x_np.shape[1:]))
                dy = f.create_dataset("y", shape=(n, *y_np.shape[1:]), dtype=y_np.dtype,
                                      chunks=(1, *y_np.shape[1:]))
            dx[start:start + len(x_np)] = x_np
            dy[start:start + len(y_np)] = y_np
            start += len(x_np)
        f.attrs.update(header)
    return path


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, torch.Tensor | np.ndarray],
                 attrs: Mapping[str, Any] | None = None) -> Path:
    """Write named arrays (one HDF5 dataset each) and JSON-encoded attributes, atomically."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().resolve_conj().numpy()
                f.create_dataset(name, data=np.asarray(value))
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


class MeasurementDataset(Dataset):
    """Pairs ``(x_i, y_i)`` from a file written by :func:`make_measurements`, as float tensors.

    The file is checked when the dataset is built (missing -> ``FileNotFoundError``, unreadable,
    not HDF5 or without matching ``x``/``y`` -> ``ValueError``, each naming the path) and then
    opened lazily on first access in each process, so it works with ``DataLoader`` workers.
    ``attrs`` holds the decoded provenance attributes.
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"measurements: no such file {str(self.path)!r}")
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in ("x", "y") if k not in f]
                if missing:
                    raise ValueError(f"measurements: {str(self.path)!r} has no dataset(s) {missing}")
                nx, ny = len(f["x"]), len(f["y"])
                self.x_shape, self.y_shape = tuple(f["x"].shape[1:]), tuple(f["y"].shape[1:])
                self.attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
        except OSError as err:
            raise ValueError(f"measurements: {str(self.path)!r} is not a readable HDF5 file ({err})") from err
        if nx != ny:
            raise ValueError(f"measurements: {str(self.path)!r} holds {nx} x but {ny} y samples")
        self._n = nx
        self._file = None

    def __len__(self) -> int:
        return self._n

    def operator(self) -> LinearOperator:
        """The forward operator the measurements were made with, rebuilt from the file's
        ``operator`` attribute (:func:`operator_from_record`); ``ValueError`` naming the path if the
        file records none that can be rebuilt."""
        try:
            op = operator_from_record(self.attrs.get("operator"))
        except ValueError as err:
            raise ValueError(f"measurements: {str(self.path)!r}: {err}") from None
        if tuple(op.in_shape) != self.x_shape or tuple(op.out_shape) != self.y_shape:
            raise ValueError(f"measurements: {str(self.path)!r} holds x {self.x_shape} and y {self.y_shape}, "
                             f"its operator maps {op.in_shape} -> {op.out_shape}")
        return op

    def _handle(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self._n <= index < self._n:
            raise IndexError(f"index {index} out of range for {self._n} samples")
        f = self._handle()
        try:
            x, y = f["x"][index], f["y"][index]
        except (OSError, KeyError) as err:
            raise ValueError(f"measurements: cannot read sample {index} of {str(self.path)!r} ({err})") from err
        return torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y))

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
