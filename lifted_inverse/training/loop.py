"""The training loop shared by lifted and backprop training: epochs, timing, metrics, history,
callbacks, tqdm progress and checkpoints that resume exactly.

``train(task, TrainConfig(...), callbacks=()) -> result dict`` with keys ``history`` (one record
per epoch: ``epoch``, ``objective``, ``seconds`` (cumulative training time, evaluation excluded),
``epoch_seconds``, ``test_<metric>``, ``train_<metric>``), ``train_objective`` (list),
``seconds``, ``seconds_per_epoch``, ``test_<metric>``, ``method``, ``solver``, ``task``.
A callback is ``cb(record: dict, trainer) -> bool | None``; returning True stops training.

Fields of :class:`TrainConfig` left at None (``lr``, ``lam``, ``state_init``, ``state_order``,
``state_lr``) take the task's settings for the method and solver (``task.defaults['lifted']
[(method, solver)]``, e.g. digits-mlp's tuned lifted Bregman BCD), then :data:`ENGINE_DEFAULTS`;
the result's ``config`` records the values that ran.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from ..lifted.batched import BatchedLiftedSolver
from ..lifted.model import lift
from ..lifted.objective import LiftedObjective, WeightRegularizer
from ..lifted.penalties import PENALTIES
from ..lifted.solvers import SOLVERS, STATE_INITS, STATE_ORDERS, LiftedSolver, StateStore
from ..networks.checkpoint import load_checkpoint, save_checkpoint
from .tasks import Task

METHODS = tuple(PENALTIES) + ("backprop",)
BACKPROP_SOLVERS = ("adam", "sgd")
#: values of the TrainConfig fields left at None when the task sets none (lr: the solver's own)
ENGINE_DEFAULTS = {"lam": 1.0, "state_init": "store", "state_order": "bottom-up", "state_lr": 1.0}


@dataclass
class TrainConfig:
    """Options of one training run (see ``lifted-inverse train --help``)."""

    method: str = "bregman"
    solver: str = "bcd"
    epochs: int = 10
    batch_size: int | None = 64
    lr: float | None = None
    seed: int = 0
    state_steps: int = 1
    #: hidden states of a mini-batch from the per-sample store ('store') or from a forward pass
    #: with the current weights ('forward': no store is kept); see LiftedSolver
    state_init: str | None = None
    #: colour groups of a state sweep from the input ('bottom-up') or from the output ('top-down')
    state_order: str | None = None
    #: step state_lr/L of the state blocks, in (0, 2)
    state_lr: float | None = None
    #: weight λ of the hidden-layer penalties
    lam: float | None = None
    rho: float = 1.0
    tau: float = 1.0
    inner_sweeps: int = 3
    momentum: float = 0.9
    power_iterations: int = 3
    #: layer-parallel kernels (:class:`~lifted_inverse.lifted.batched.BatchedLiftedSolver`) for
    #: uniform-chain MLPs, the per-layer path for every other network; same results to rounding.
    #: CPU: 10x256 MLP 2.0-2.4x per sweep at B <= 16, 1.4x at B = 64; digits-mlp 1.40 vs 1.51x
    #: backprop's epoch time. False: always the per-layer solver.
    batched_layers: bool = True
    regularizer: str | None = None
    reg_strength: float = 1e-4
    progress: bool = False
    checkpoint: str | None = None
    checkpoint_every: int = 1
    resume: str | None = None
    #: data-parallel lifted training over an initialised torch.distributed process group
    #: (``lifted_inverse.training.distributed``); each rank keeps only its shard's states
    distributed: bool = False
    reduce_fn: Callable | None = field(default=None, repr=False)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; expected one of {list(METHODS)}")
        allowed = BACKPROP_SOLVERS if self.method == "backprop" else SOLVERS
        if self.solver not in allowed:
            raise ValueError(f"solver: {self.solver!r} is not available for method {self.method!r}; "
                             f"expected one of {list(allowed)}")
        if int(self.epochs) != self.epochs or self.epochs < 0:
            raise ValueError(f"epochs: must be a non-negative integer, got {self.epochs}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise ValueError(f"batch_size: must be a positive integer or None, got {self.batch_size}")
        if self.state_init not in (None, *STATE_INITS):
            raise ValueError(f"state_init: expected one of {list(STATE_INITS)}, got {self.state_init!r}")
        if self.state_order not in (None, *STATE_ORDERS):
            raise ValueError(f"state_order: expected one of {list(STATE_ORDERS)}, got {self.state_order!r}")
        if self.state_lr is not None and not 0 < self.state_lr < 2:
            raise ValueError(f"state_lr: expected a number in (0, 2) (a descent step), got {self.state_lr}")
        if self.lam is not None and not (self.lam > 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam: must be a positive number, got {self.lam}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be a positive number, got {self.lr}")

    def resolved(self, task: Task) -> TrainConfig:
        """A copy with the None fields set from the task's lifted settings for this method and
        solver, then :data:`ENGINE_DEFAULTS` (see the module docstring)."""
        preset = {} if self.method == "backprop" else \
            dict(task.defaults.get("lifted", {}).get((self.method, self.solver), {}))
        fields = {k: v for k, v in preset.items() if k in ("lr", *ENGINE_DEFAULTS) and getattr(self, k) is None}
        fields.update({k: v for k, v in ENGINE_DEFAULTS.items() if getattr(self, k) is None and k not in fields})
        out = replace(self, **fields)
        out.validate()
        return out

    def as_json(self) -> dict:
        d = asdict(self)
        d.pop("reduce_fn")
        return d


class LiftedTrainer:
    """Lifted training of ``task.model`` (weights updated in place in the user's model)."""

    def __init__(self, task: Task, config: TrainConfig):
        config = config.resolved(task)        # None fields: the task's lifted setting, then the engine's
        self.task, self.config = task, config
        self.net = lift(task.model, task.input_shape, task.output_activation)
        reg = WeightRegularizer(config.regularizer, config.reg_strength) if config.regularizer else None
        self.objective = LiftedObjective(self.net, config.method, lam=config.lam, rho=config.rho,
                                         regularizer=reg)
        solver_cls = BatchedLiftedSolver if config.batched_layers else LiftedSolver
        self.solver = solver_cls(self.objective, config.solver, lr=config.lr,
                                 state_steps=config.state_steps, momentum=config.momentum,
                                 tau=config.tau, inner_sweeps=config.inner_sweeps,
                                 power_iterations=config.power_iterations, reduce_fn=config.reduce_fn,
                                 state_init=config.state_init, state_order=config.state_order,
                                 state_lr=config.state_lr)
        self.store = None if self.solver.state_init == "forward" else self.initial_store()

    def initial_store(self) -> StateStore:
        """Per-sample states of the forward pass (a data-parallel subclass keeps its shard only)."""
        return StateStore.from_forward(self.objective, self.task.x_train)

    def set_epoch(self, epoch: int) -> None:
        self.objective.set_epoch(epoch)

    def train_batch(self, ids: torch.Tensor | None) -> float:
        x, t = self.task.x_train, self.task.t_train
        if ids is not None:
            x, t = x.index_select(0, ids), t.index_select(0, ids)
        return self.solver.step(x, t, self.store, ids)

    def state_dict(self) -> dict:
        return {"solver": self.solver.state_dict(),
                "states": None if self.store is None else self.store.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.solver.load_state_dict(d["solver"])
        if d["states"] is not None:
            self.store = StateStore.from_state_dict(d["states"])


def make_trainer(task: Task, config: TrainConfig):
    if config.method == "backprop":
        from .backprop import BackpropTrainer
        return BackpropTrainer(task, config)
    if config.distributed:
        from .distributed import DataParallelLiftedTrainer
        return DataParallelLiftedTrainer(task, config)
    return LiftedTrainer(task, config)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="epoch")


def train(task: Task, config: TrainConfig, callbacks: Sequence[Callable] = ()) -> dict:
    """Train ``task.model`` by ``config.method``/``config.solver`` (see module docstring).

    Denormal floats are flushed to zero while training (lifted and backprop alike): Adam's
    second moments of tiny gradients otherwise fall into the subnormal range, where x86 CPUs are
    up to 100× slower.
    """
    config.validate()
    config = config.resolved(task)
    flushed = torch.set_flush_denormal(True)
    try:
        return _train(task, config, callbacks)
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _train(task: Task, config: TrainConfig, callbacks: Sequence[Callable]) -> dict:
    torch.manual_seed(config.seed)
    trainer = make_trainer(task, config)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    start_epoch = 0
    if config.resume:
        ck = load_checkpoint(config.resume, map_location=task.x_train.device, what="resume")
        cfg, state = ck.config, ck.trainer_state
        if state is None:
            raise ValueError(f"resume: {config.resume} holds a network but no training state")
        if cfg.get("method") != config.method or cfg.get("solver") != config.solver:
            raise ValueError(f"resume: checkpoint was written by method={cfg.get('method')!r} "
                             f"solver={cfg.get('solver')!r}, not {config.method!r}/{config.solver!r}")
        task.model.load_state_dict(ck.state_dict)
        trainer.load_state_dict({"solver": state["solver"], "states": state["states"]})
        gen.set_state(state["rng"])
        history = list(state["history"])
        start_epoch = int(ck.epoch)
    n = task.x_train.shape[0]
    bs = n if config.batch_size is None else min(int(config.batch_size), n)
    bar = _progress(config.epochs, start_epoch, config.progress, f"{config.method}/{config.solver}")
    seconds = history[-1]["seconds"] if history else 0.0
    for epoch in range(start_epoch, config.epochs):
        trainer.set_epoch(epoch)
        t0 = time.perf_counter()
        if bs >= n:
            values = [trainer.train_batch(None)]
            weights = [n]
        else:
            perm = torch.randperm(n, generator=gen).to(task.x_train.device)
            values, weights = [], []
            for s in range(0, n, bs):
                ids = perm[s:s + bs]
                values.append(trainer.train_batch(ids))
                weights.append(len(ids))
        dt = time.perf_counter() - t0
        seconds += dt
        objective = sum(v * w for v, w in zip(values, weights)) / sum(weights)
        if not math.isfinite(objective):
            raise FloatingPointError(f"training diverged at epoch {epoch}: objective {objective}")
        record = {"epoch": epoch + 1, "objective": objective, "seconds": seconds, "epoch_seconds": dt}
        record.update(task.evaluate(task.model))
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(obj=f"{objective:.4g}", **{k: f"{v:.4g}" for k, v in record.items()
                                                       if k.startswith("test_")})
        if config.checkpoint and ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs):
            sd = trainer.state_dict()  # collective for a data-parallel trainer: every rank calls it
            if getattr(trainer, "is_writer", True):
                save_checkpoint(config.checkpoint, task.model, description=task.describe(),
                                config={**config.as_json(), "task": task.name}, epoch=epoch + 1,
                                metrics=record, trainer_state={**sd, "rng": gen.get_state(), "history": history})
        if any(cb(record, trainer) for cb in callbacks):
            break
    if bar is not None:
        bar.close()
    final = task.evaluate(task.model)
    epochs_run = max(len(history), 1)
    return {
        "task": task.name, "method": config.method, "solver": config.solver,
        "epochs": len(history), "batch_size": bs, "seed": config.seed,
        **final,
        "train_objective": [h["objective"] for h in history],
        "seconds": seconds, "seconds_per_epoch": seconds / epochs_run,
        "threads": torch.get_num_threads(),
        "history": history, "config": config.as_json(),
    }
