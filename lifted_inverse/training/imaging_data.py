"""Training data of the imaging tasks from an HDF5 file (``train --data FILE.h5``), read lazily.

The file is one written by ``lifted-inverse data`` (layout ``'data'``: ``x``, ``y``) or a
deepinv-style file (``x_train`` / ``y_train``, ``x_test`` / ``y_test``):
:class:`~lifted_inverse.datasets.hdf5.MeasurementDataset` reads it. What the task takes from it:

* training pairs ``(x_i, y_i)``: every training sample but the validation split, read from disk
  per mini-batch by :class:`FilePairs` (only the batch's chunks are read, so a file larger than
  memory trains). A file of clean images only (no ``y`` / ``y_train``) is measured on the fly,
  ``y_i = A x_i + e_i`` with Gaussian noise drawn per sample, seeded by ``(seed, epoch, i)``:
  fresh noise every epoch, the same draws whatever the batch order;
* the operator ``A``: rebuilt from the file's ``operator`` attribute (its registry spec); a file
  without one (a foreign deepinv file) takes the task's operator, and the file's measurement
  shape must fit it. The operator must be the task's kind (``denoise``, ``blur``, ``ct``);
* the noise model of the validation / test measurements: the file's ``noise`` attribute when it
  records a Gaussian model (``null``: noiseless), else the task's level (``--noise``);
* validation (model selection): a seeded fraction ``val_fraction`` of the training samples
  (:func:`~.tasks.seeded_split`, at least one sample), held in memory with the test set;
* test: the file's test split (deepinv ``x_test`` / ``y_test``) when it has one, else the task's
  built-in held-out images at the file's image size, measured by ``A`` and the noise model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..datasets.hdf5 import MeasurementDataset
from ..operators import GaussianNoise
from .tasks import seeded_split

#: fraction of the file's training samples held out for validation when not given
VAL_FRACTION = 0.1


def is_hdf5_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file with the HDF5 signature."""
    import h5py

    path = Path(path)
    return path.is_file() and h5py.is_hdf5(path)


def noise_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s noise draw in ``epoch`` (a hash of the three, 63 bits)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def measure_samples(x: torch.Tensor, A, noise: dict, seeds) -> torch.Tensor:
    """``y_b = A x_b + e_b`` for a batch ``x`` (B, C, H, W), ``e_b`` Gaussian (``noise['sigma']``,
    relative to rms(A x_b) when ``noise['relative']``) drawn with ``seeds[b]``; ``A`` None is the
    identity."""
    with torch.no_grad():
        clean = x if A is None else A(x)
        if len(seeds) == 0:     # an empty batch (a data-parallel rank without samples)
            return clean.clone()
        return torch.cat([GaussianNoise(noise["sigma"], relative=noise["relative"], seed=s)(clean[b:b + 1])
                          for b, s in enumerate(seeds)])


def read_finite(data: MeasurementDataset, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``data.read(rows)``; NaN or Inf in a sample is a ``ValueError`` naming the dataset."""
    x, y = data.read(rows)
    for key, a in ((data.x_key, x), (data.y_key, y)):
        if a is not None and not bool(torch.isfinite(a).all()):
            bad = sorted({int(rows[i]) for i in torch.nonzero(~torch.isfinite(a.flatten(1)).all(1)).flatten()})
            raise ValueError(f"{data.name}: dataset {key!r} of {str(data.path)!r} holds NaN or Inf in "
                             f"sample(s) {bad[:8]}")
    return x, y


class FilePairs:
    """The training pairs of a file, read per mini-batch (module docstring).

    ``data`` the file's split, ``ids`` (N,) the file indices of the training samples (training
    sample ``k`` is file sample ``ids[k]``), ``operator`` ``A`` (None: denoising), ``noise`` the
    model of on-the-fly measurements of a clean-only file. :meth:`batch` returns
    ``(y, x)`` on ``device`` in ``dtype``.
    """

    def __init__(self, data: MeasurementDataset, ids: torch.Tensor, operator, noise: dict, seed: int,
                 dtype: torch.dtype, device: torch.device):
        self.data, self.ids = data, ids.cpu()
        self.operator, self.noise, self.seed = operator, dict(noise), int(seed)
        self.dtype, self.device = dtype, torch.device(device)
        self.epoch = 0

    @property
    def n(self) -> int:
        return int(self.ids.numel())

    @property
    def fresh(self) -> bool:
        """Whether the measurements are drawn here (a clean-only file) and redrawn per epoch."""
        return self.data.y_key is None

    @property
    def image_shape(self) -> tuple:
        return tuple(self.data.x_shape)

    @property
    def measurement_shape(self) -> tuple:
        if not self.fresh:
            return tuple(self.data.y_shape)
        return self.image_shape if self.operator is None else tuple(self.operator.out_shape)

    def new_epoch(self, epoch: int, seed: int) -> None:
        """The noise of a clean-only file's measurements follows ``(seed, epoch)``."""
        self.epoch, self.seed = int(epoch), int(seed)

    def batch(self, ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(measurements, clean images)`` of training samples ``ids`` (all when None: the
        whole training split is read)."""
        rows = self.ids if ids is None else self.ids.index_select(0, ids.cpu())
        x, y = read_finite(self.data, rows)
        x = x.to(device=self.device, dtype=self.dtype)
        if y is None:
            y = measure_samples(x, self.operator, self.noise,
                                [noise_seed(self.seed, self.epoch, int(i)) for i in rows])
        return y.to(device=self.device, dtype=self.dtype), x


@dataclass
class FileData:
    """What an imaging task takes from a file: the training ``source``, the operator ``spec`` and
    ``noise`` model, validation and test images with their measurements (lists of (C, H, W)
    tensors), the test names and ``info`` (provenance for the task description)."""

    source: FilePairs
    spec: dict
    noise: dict
    val_x: list
    val_y: list
    test_x: list | None
    test_y: list | None
    test_names: list | None
    info: dict


def _gaussian_noise(attrs: dict) -> dict | None:
    """The file's noise model as ``{'sigma', 'relative'}``; None if it records none we can redraw."""
    if "noise" not in attrs:
        return None
    record = attrs["noise"]
    if record is None:
        return {"sigma": 0.0, "relative": False}
    if isinstance(record, dict) and record.get("model") == "gaussian" and "sigma" in record:
        return {"sigma": float(record["sigma"]), "relative": bool(record.get("relative", False))}
    return None


def _operator_spec(data: MeasurementDataset, task_spec: dict, task: str) -> tuple[dict, str]:
    """The file's operator spec (or the task's, for a file that records none) and where it came
    from; ``ValueError`` naming ``data`` for another kind of operator."""
    record = data.attrs.get("operator")
    if isinstance(record, dict) and isinstance(record.get("spec"), dict):
        data.operator()     # rebuilds and checks the shapes against the datasets
        spec, source = dict(record["spec"]), "file"
    elif record is not None and not isinstance(record, str):
        raise ValueError(f"{data.name}: {str(data.path)!r}: its operator {record.get('class', record)!r} "
                         "has no registry spec to rebuild it from")
    else:   # no record (a foreign file: deepinv stores the class name only)
        spec, source = dict(task_spec), "task"
    if spec["name"] != task_spec["name"]:
        raise ValueError(f"{data.name}: {str(data.path)!r} holds {spec['name']!r} measurements; task "
                         f"{task!r} trains on {task_spec['name']!r} measurements")
    return spec, source


def load_file_data(path: str | Path, *, task: str, task_spec: dict, task_noise: dict, noise_given: bool,
                   val_fraction: float | None, seed: int, operator_for: Callable, dtype: torch.dtype,
                   device: torch.device, test_images: Callable) -> FileData:
    """Open ``path`` for task ``task`` (module docstring). ``task_spec`` / ``task_noise`` are the
    task's operator and noise (``noise_given``: the user set the level); ``operator_for(spec,
    shape)`` builds (and caches) an operator; ``test_images(shape) -> (names, images)`` the task's
    built-in test images at an image shape. Errors name ``data`` (the file) or the option."""
    fraction = VAL_FRACTION if val_fraction is None else val_fraction
    if isinstance(fraction, bool) or not (0 < fraction < 1):
        raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    data = MeasurementDataset(path, require_y=False, name="data")
    if len(data.x_shape) != 3:
        raise ValueError(f"data: dataset {data.x_key!r} of {str(data.path)!r} holds samples of shape "
                         f"{data.x_shape}; expected images (C, H, W)")
    if len(data) < 2:
        raise ValueError(f"data: {str(data.path)!r} holds {len(data)} training sample(s); at least 2 are "
                         "needed (training and validation)")
    spec, spec_source = _operator_spec(data, task_spec, task)
    A = operator_for(spec, data.x_shape)
    out_shape = data.x_shape if A is None else tuple(A.out_shape)
    if data.y_key is not None and data.y_shape != out_shape:
        raise ValueError(f"data: dataset {data.y_key!r} of {str(data.path)!r} holds measurements of shape "
                         f"{data.y_shape}; the operator {spec['name']!r} makes {out_shape} from images "
                         f"{data.x_shape}")
    file_noise = _gaussian_noise(data.attrs)
    if data.y_key is not None and noise_given:
        raise ValueError(f"noise: the measurements of --data {str(data.path)!r} carry their own noise; "
                         "--noise applies to files of clean images only")
    if data.y_key is None or file_noise is None:
        noise, noise_source = dict(task_noise), "user" if noise_given else "task"
    else:
        noise, noise_source = file_noise, "file"
    train_ids, val_ids = seeded_split(len(data), fraction, seed)
    if len(val_ids) == 0:
        train_ids, val_ids = train_ids[1:], train_ids[:1]

    def held_out(split_data, ids, seed0):
        x, y = read_finite(split_data, ids)
        x = x.to(device=device, dtype=dtype)
        if y is None:
            y = measure_samples(x, A, noise, [seed0 + i for i in range(len(x))])
        return list(x), list(y.to(device=device, dtype=dtype))

    val_x, val_y = held_out(data, val_ids, 2 * 10**5)
    test_x = test_y = names = None
    if "test" in data.splits:
        test = MeasurementDataset(path, "test", require_y=data.y_key is not None, name="data")
        if test.x_shape != data.x_shape:
            raise ValueError(f"data: {str(data.path)!r} holds test images {test.x_shape}, training images "
                             f"{data.x_shape}")
        if test.y_key is not None and test.y_shape != data.y_shape:
            raise ValueError(f"data: {str(data.path)!r} holds test measurements {test.y_shape}, training "
                             f"measurements {data.y_shape}")
        test_x, test_y = held_out(test, torch.arange(len(test)), 10**5)
        names = [f"test{i}" for i in range(len(test))]
        test_source = "file"
    else:
        names, images = test_images(data.x_shape)
        test_x = [t.to(device=device, dtype=dtype) for t in images]
        test_y = [measure_samples(t[None], A, noise, [10**5 + i])[0] for i, t in enumerate(test_x)]
        test_source = "builtin"
    source = FilePairs(data, train_ids, A, noise, seed, dtype, device)
    info = {"path": str(data.path), "layout": data.layout, "n_file": len(data), "n_train": source.n,
            "n_val": len(val_x), "val_fraction": fraction, "n_test": len(test_x), "test": test_source,
            "operator": spec_source, "noise": noise_source, "fresh_noise": source.fresh}
    return FileData(source, spec, noise, val_x, val_y, test_x, test_y, names, info)

