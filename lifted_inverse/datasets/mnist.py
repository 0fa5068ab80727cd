"""MNIST-format IDX files (raw or gzip), read from a local folder; nothing is downloaded.

IDX layout: two zero bytes, a type byte, a byte ``ndim``, ``ndim`` big-endian uint32 sizes,
then the data in big-endian order.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import atomic_path

_IDX_TYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_TYPE_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its stored shape.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a bad
    magic number, unknown type code or a size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx: no such file {str(path)!r}")
    try:
        with _open(path) as fh:
            header = fh.read(4)
            if len(header) < 4 or header[0] != 0 or header[1] != 0:
                raise ValueError(f"idx: {str(path)!r} is not an IDX file (bad magic number {header!r})")
            code, ndim = header[2], header[3]
            if code not in _IDX_TYPES:
                raise ValueError(f"idx: {str(path)!r} has unknown data type code 0x{code:02x}")
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise ValueError(f"idx: {str(path)!r} is truncated inside its header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = _IDX_TYPES[code]
            expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            data = fh.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"idx: cannot read {str(path)!r} ({err})") from err
    if len(data) != expected:
        raise ValueError(
            f"idx: {str(path)!r} header says shape {dims} ({expected} bytes) but the file holds "
            f"{'more' if len(data) > expected else len(data)} bytes of data"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip if ``compress`` or the name ends in .gz), atomically."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _TYPE_CODES:
        raise ValueError(f"array: dtype {array.dtype} has no IDX type code "
                         f"(uint8, int8, int16, int32, float32, float64)")
    if array.ndim > 255:
        raise ValueError(f"array: at most 255 dimensions, got {array.ndim}")
    code = _TYPE_CODES[key]
    payload = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
               + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes())
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    with atomic_path(path) as tmp:
        with (gzip.open(tmp, "wb") if compress else open(tmp, "wb")) as fh:
            fh.write(payload)
    return path


def _find(folder: Path, stem: str) -> Path:
    # standard names and the common '.' variant (train-images.idx3-ubyte), raw or gzipped
    candidates = [stem, stem.replace("-idx", ".idx")]
    for name in candidates:
        for suffix in ("", ".gz"):
            p = folder / f"{name}{suffix}"
            if p.is_file():
                return p
    raise FileNotFoundError(f"mnist: no {stem}[.gz] in {str(folder)!r}")


class MnistIdx(Dataset):
    """MNIST-format images and labels from a local folder: items ``(image (1, H, W) in [0, 1], label)``.

    Looks for ``{train,t10k}-images-idx3-ubyte`` and ``...-labels-idx1-ubyte`` (optionally
    ``.gz``), as distributed for MNIST, Fashion-MNIST and KMNIST.
    """

    def __init__(self, folder: str | os.PathLike, train: bool = True):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"mnist: no such directory {str(folder)!r}")
        prefix = "train" if train else "t10k"
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"mnist: expected images (N, H, W) and labels (N,) in {str(folder)!r}, "
                             f"got {images.shape} and {labels.shape}")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        self.images = torch.from_numpy(images.astype(np.float32) / scale).unsqueeze(1)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
