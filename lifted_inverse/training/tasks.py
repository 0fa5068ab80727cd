"""Task registry: a task bundles data, a liftable model and how to score it.

Other modules add tasks with the decorator::

    @register_task("pnn-denoise")
    def make(config: TaskConfig) -> Task: ...

``make_task(name, config)`` builds one; ``TASKS`` maps names to factories. Importing
``lifted_inverse.training`` registers the built-in tasks (digits-*, mnist-mlp); modules listed in
``TASK_MODULES`` are imported lazily on first look-up so imaging tasks can live elsewhere.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

TASKS: dict[str, Callable[[TaskConfig], Task]] = {}
#: modules that register more tasks when imported (missing ones are skipped)
TASK_MODULES = ["lifted_inverse.training.digits", "lifted_inverse.training.mnist",
                "lifted_inverse.training.imaging"]


def register_task(name: str):
    """Decorator registering ``factory(config) -> Task`` under ``name``."""
    def deco(factory):
        if name in TASKS and TASKS[name] is not factory:
            raise ValueError(f"task {name!r} is already registered")
        TASKS[name] = factory
        return factory
    return deco


def _load_task_modules() -> None:
    for mod in TASK_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise


def available_tasks() -> list[str]:
    _load_task_modules()
    return sorted(TASKS)


@dataclass
class TaskConfig:
    """Options a task factory may use (all optional)."""

    seed: int = 0
    data: str | None = None
    noise: float | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    extra: dict = field(default_factory=dict)


@dataclass
class Task:
    """Data, model and scoring of one training job: the interface the trainer reads.

    ``x_train`` ``(N, *input_shape)`` inputs; ``t_train`` the training target as the last lifted
    state (one-hot rows for classification, the clean signal for regression); ``x_val``/``y_val``
    the validation set (model selection reads only this) and ``x_test``/``y_test`` the held-out
    test set (labels or clean signals). ``output_activation``: σ of the model's last layer when the
    model ends in a linear module (``Softmax`` for classification, None = identity). ``kind``:
    ``'classification'`` (metric ``accuracy``) or ``'regression'`` (metric ``psnr`` with
    ``data_range``). ``presets``: the task's training settings, layered over the engine's (see
    :mod:`.config`).

    Methods the trainer calls: :meth:`train_batch`, :meth:`lifted_network`,
    :meth:`backprop_loss`, :meth:`after_update`, :meth:`new_epoch`, :meth:`evaluate`,
    :meth:`describe`. Imaging tasks (:mod:`.imaging`) implement the same methods.
    """

    name: str
    model: nn.Module
    x_train: torch.Tensor
    t_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    kind: str = "classification"
    output_activation: nn.Module | None = None
    input_shape: tuple | None = None
    data_range: float = 1.0
    y_train: torch.Tensor | None = None
    presets: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"kind: expected 'classification' or 'regression', got {self.kind!r}")
        for name in ("x_train", "t_train", "x_test", "y_test", "x_val", "y_val"):
            t = getattr(self, name)
            if t is None and name in ("x_val", "y_val"):
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: contains NaN or inf")
        if self.x_train.shape[0] != self.t_train.shape[0]:
            raise ValueError(f"t_train: {self.t_train.shape[0]} targets for {self.x_train.shape[0]} inputs")
        if self.x_test.shape[0] != self.y_test.shape[0]:
            raise ValueError(f"y_test: {self.y_test.shape[0]} labels for {self.x_test.shape[0]} inputs")
        if (self.x_val is None) != (self.y_val is None) or \
                (self.x_val is not None and self.x_val.shape[0] != self.y_val.shape[0]):
            raise ValueError("y_val: give validation inputs and labels together, one label per input")

    @property
    def metric(self) -> str:
        return "accuracy" if self.kind == "classification" else "psnr"

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def train_batch(self, ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of the training samples ``ids`` (all samples when None)."""
        if ids is None:
            return self.x_train, self.t_train
        return self.x_train.index_select(0, ids), self.t_train.index_select(0, ids)

    def lifted_network(self, model: nn.Module):
        """The lifted view of ``model`` (:func:`lifted_inverse.lifted.lift`)."""
        from ..lifted.model import lift
        return lift(model, self.input_shape, self.output_activation)

    def new_epoch(self, epoch: int, seed: int) -> None:
        """Called before every epoch (tasks with noise augmentation redraw it here)."""

    def after_update(self, model: nn.Module) -> None:
        """Called after every backprop weight update (networks with derived buffers refresh them)."""

    def write_figures(self, model: nn.Module, label: str, out) -> None:
        """Task-specific figures into the folder ``out`` (none for these tasks)."""

    def report(self, model: nn.Module) -> dict:
        """Extra figures for the final result (none for these tasks)."""
        return {}

    def describe(self) -> dict:
        """JSON-able description of the task for checkpoints and metrics."""
        return {"task": self.name, "input_shape": list(self.input_shape or self.x_train.shape[1:]),
                "operator": None, **self.info}

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """The model's ordinary forward pass."""
        outs = [model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
        return torch.cat(outs)

    @torch.no_grad()
    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (argmax of the output) or mean PSNR in dB over samples."""
        out = self.predict(model, x)
        if self.kind == "classification":
            return float((out.argmax(dim=1) == y).double().mean())
        if self.output_activation is not None:
            out = self.output_activation(out)
        mse = ((out - y) ** 2).reshape(out.shape[0], -1).mean(dim=1).clamp_min(1e-20)
        return float((10 * torch.log10(self.data_range ** 2 / mse)).mean())

    def evaluate(self, model: nn.Module, split: str = "test") -> dict:
        """``{'<split>_<metric>': …}`` on ``split`` in ``'train'`` (at most 2000 samples), ``'val'``,
        ``'test'``."""
        was = model.training
        model.eval()
        if split == "test":
            x, y = self.x_test, self.y_test
        elif split == "val":
            if self.x_val is None:
                raise ValueError(f"split: task {self.name!r} has no validation set")
            x, y = self.x_val, self.y_val
        elif split == "train":
            n = min(2000, self.n_train)
            y = self.y_train
            if y is None:
                y = self.t_train.argmax(dim=1) if self.kind == "classification" else self.t_train
            x, y = self.x_train[:n], y[:n]
        else:
            raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
        res = {f"{split}_{self.metric}": self.score(model, x, y)}
        model.train(was)
        return res

    def backprop_loss(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss matching the lifted output penalty: cross-entropy against the one-hot target
        (= B_softmax up to the target's entropy, 0 for one-hot), or ½‖σ(z) − t‖² per sample."""
        output = model(inputs)
        if self.kind == "classification":
            return -(target * torch.log_softmax(output, dim=1)).sum(dim=1).mean()
        if self.output_activation is not None:
            output = self.output_activation(output)
        return 0.5 * ((output - target) ** 2).reshape(output.shape[0], -1).sum(dim=1).mean()


def make_task(name: str, config: TaskConfig | None = None) -> Task:
    """Build the registered task ``name``."""
    if name not in TASKS:
        _load_task_modules()
    if name not in TASKS:
        raise ValueError(f"task: unknown {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](config or TaskConfig())


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded permutation split into (train ids, test ids)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = math.floor(n * test_fraction + 0.5)
    return perm[n_test:], perm[:n_test]


def seeded_three_way_split(n: int, val_fraction: float, test_fraction: float, seed: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) ids: the test ids are those of ``seeded_split(n, test_fraction, seed)``
    (a task's test set does not depend on whether it also has a validation set); the validation
    ids are the last ``val_fraction·n`` of the remaining permutation."""
    rest, test = seeded_split(n, test_fraction, seed)
    n_val = math.floor(n * val_fraction + 0.5)
    return rest[:len(rest) - n_val], rest[len(rest) - n_val:], test
