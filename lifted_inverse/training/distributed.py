"""The training steps of one rank of a ``torch.distributed`` process group (under torchrun).

* :class:`DataParallelLiftedStep` (``TrainConfig(distributed=True)``, lifted methods);
* :class:`DataParallelBackpropStep` (``distributed=True``, ``method='backprop'``):
  ``DistributedDataParallel`` on the same batches;
* :class:`LayerParallelStep` (``TrainConfig(layer_parallel=STAGES)``, lifted methods): one stage
  of layers per rank (:mod:`lifted_inverse.lifted.layer_parallel`), with ``distributed=True`` on
  a grid of stages × data replicas.

Rank 0 writes metrics, figures and checkpoints (``is_writer``); every rank calls ``state_dict``
(a collective).

Data-parallel lifted step. Every rank builds the same task and model; rank 0's weights are
broadcast so the replicas start identical. The rank owns the contiguous shard of training samples
:class:`~lifted_inverse.lifted.distributed.Shard` and keeps lifted states for those samples only.
Mini-batches are drawn from the same seeded permutation on every rank (global ids); a rank works
on the part of each batch it owns (possibly none) and the solver's ``reduce_fn``
(:class:`~lifted_inverse.lifted.distributed.AllReduce`) sums W-gradients and statistics, so the
update equals the single-process one. Checkpoints hold the states gathered by global sample id
(rank 0 writes them) and resume on any number of ranks.
"""
from __future__ import annotations

import inspect
from dataclasses import replace

import torch

from ..lifted.distributed import AllReduce, Shard, broadcast_parameters, gather_rows, rank_and_world
from ..lifted.solvers import StateStore
from .config import TrainConfig
from .steps import BackpropStep, LiftedStep, lifted_objective, solver_options


def _require_group(flag: str) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise ValueError(f"{flag}: no torch.distributed process group is initialised; call "
                         "lifted_inverse.lifted.distributed.init_from_env() (or launch with torchrun)")


class DataParallelLiftedStep(LiftedStep):
    """:class:`~.steps.LiftedStep` over a ``torch.distributed`` group (see module docstring).

    Attributes: ``comm`` (the :class:`AllReduce` hook, with its byte log), ``shard``, ``rank``,
    ``world_size``, ``is_writer`` (rank 0: writes checkpoints and metrics).
    """

    def __init__(self, task, config: TrainConfig, group=None):
        _require_group("distributed")
        if config.method == "backprop":
            raise ValueError("distributed: DataParallelLiftedStep trains lifted methods; backprop "
                             "takes DataParallelBackpropStep")
        self.group = group
        self.rank, self.world_size = rank_and_world(group)
        self.shard = Shard.of(task.n_train, self.rank, self.world_size)
        self.comm = AllReduce(group)
        self.absent_steps = 0       # batches without a sample of this rank (_absent_step)
        broadcast_parameters([p for p in task.model.parameters()], src=0, group=group)
        super().__init__(task, replace(config, reduce_fn=self.comm))

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def _own(self) -> torch.Tensor:
        return torch.arange(self.shard.start, self.shard.stop, device=self.task.device)

    def initial_store(self) -> StateStore:
        x, _ = self.task.train_batch(self._own())
        return StateStore.from_forward(self.objective, x)

    def __call__(self, ids: torch.Tensor | None) -> float:
        """One sweep on the global batch ``ids`` (None: all samples); returns its global objective."""
        if ids is None:
            x, t = self.task.train_batch(self._own())
            return self.solver.step(x, t, self.store, None)
        mine, local = self.shard.select(ids)
        if len(mine) == 0:
            return self._absent_step()
        x, t = self.task.train_batch(mine.to(self.task.device))
        return self.solver.step(x, t, self.store, local.to(self.task.device))

    def _absent_step(self) -> float:
        """Join the collectives of a batch without samples of this rank: a sweep on its first
        sample whose contributions to every sum are zeros (``AllReduce.absent``); the result
        (the reduced update, identical on all ranks) is kept, the stand-in's states are not."""
        first = torch.arange(self.shard.start, self.shard.start + 1, device=self.task.device)
        x, t = self.task.train_batch(first)
        scratch = None if self.store is None else StateStore(self.store.gather(first - self.shard.start))
        self.comm.absent = True
        self.absent_steps += 1
        try:
            return self.solver.step(x, t, scratch, None)
        finally:
            self.comm.absent = False

    def state_dict(self) -> dict:
        """Solver state and the states of *all* samples by global id (on rank 0; collective)."""
        states = None
        if self.store is not None:
            gathered = {s: gather_rows(v, self.shard, dst=0, group=self.group)
                        for s, v in self.store.states.items()}
            states = StateStore(gathered).state_dict() if self.is_writer else None
        return {"solver": self.solver.state_dict(), "states": states}

    def load_state_dict(self, d: dict) -> None:
        """Restore the solver and this rank's shard of the saved per-sample states."""
        self.solver.load_state_dict(d["solver"])
        if d["states"] is not None:
            full = StateStore.from_state_dict(d["states"])
            self.store = StateStore({s: self.shard.rows(v) for s, v in full.states.items()})


class DataParallelBackpropStep(BackpropStep):
    """:class:`~.steps.BackpropStep` with ``DistributedDataParallel`` (same global batches).

    Every rank draws the same global batch ``S`` (the trainer's seeded permutation) and takes its
    part ``S_r`` (``torch.tensor_split`` of the ids). DDP averages the ranks' gradients, so rank
    ``r`` back-propagates its batch-mean loss times ``P·|S_r|/|S|``: the average is then
    ``(1/|S|) Σ_{i∈S} ∇ℓ_i``, the single-process gradient, and the optimiser steps agree on all
    ranks. A rank whose part is empty (a batch smaller than ``P``) runs one sample at weight 0 so
    that it still joins the gradient all-reduce. The returned loss is the global batch mean.
    """

    def __init__(self, task, config: TrainConfig, group=None):
        _require_group("distributed")
        from torch.nn.parallel import DistributedDataParallel

        self.group = group
        self.rank, self.world_size = rank_and_world(group)
        model = task.model
        device_ids = [_model_device(model).index] if _model_device(model).type == "cuda" else None
        # buffers (e.g. the PNN's step sizes) follow from the weights on every rank: not synced
        # before each forward (the keyword was renamed in newer torch)
        quiet = "forward_sync_buffers" if "forward_sync_buffers" in \
            inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers"
        self.ddp = DistributedDataParallel(model, device_ids=device_ids, process_group=group,
                                           **{quiet: False})
        super().__init__(task, config)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def __call__(self, ids: torch.Tensor | None) -> float:
        task = self.task
        n = task.n_train if ids is None else len(ids)
        everyone = torch.arange(task.n_train, device=task.device) if ids is None else ids
        mine = everyone.tensor_split(self.world_size)[self.rank]
        weight = len(mine) * self.world_size / n
        if len(mine) == 0:
            mine = everyone[:1]
        inputs, targets = task.train_batch(mine)
        self.optimizer.zero_grad(set_to_none=True)
        loss = task.backprop_loss(self.ddp, inputs, targets)
        (loss * weight).backward()
        self.optimizer.step()
        task.after_update(task.model)
        total = (loss.detach() * weight / self.world_size).reshape(1).double()
        torch.distributed.all_reduce(total, group=self.group)
        return float(total[0])


def _model_device(model) -> torch.device:
    return next(iter(model.parameters())).device


class LayerParallelStep(LiftedStep):
    """One stage of the lifted network per rank (:class:`~lifted_inverse.lifted.layer_parallel.
    LayerParallelSolver`): every rank holds the whole model and all training data, updates its
    stage's weights and the states they produce, and exchanges boundary states with its
    neighbours.

    With ``config.distributed`` the ranks form a :class:`~lifted_inverse.lifted.layer_parallel.
    ProcessGrid` of ``config.layer_parallel`` stages × data replicas (each replica a shard of the
    samples). ``sync_model()`` (the trainer calls it before evaluating or writing) copies every
    stage's weights to all ranks. Checkpoints hold the whole model, the states of all samples and
    every stage's solver state; they resume with the same number of stages and any number of
    data replicas (the stages of another count would need other solver states).
    """

    def __init__(self, task, config: TrainConfig, group=None):
        from ..lifted.layer_parallel import LayerParallelSolver, ProcessGrid

        _require_group("layer_parallel")
        if config.method == "backprop":
            raise ValueError("layer_parallel: applies to the lifted methods, not backprop")
        stages, world = int(config.layer_parallel), torch.distributed.get_world_size()
        if stages < 1 or world % stages or (not config.distributed and stages != world):
            raise ValueError(f"layer_parallel: {stages} stages on {world} ranks (one stage per rank; "
                             "with --distributed a grid of stages × replicas, STAGES dividing the ranks)")
        grid = ProcessGrid.of(stages) if config.distributed else None
        if config.batched_layers:
            raise ValueError("batched_layers: the batched kernels do not run layer-parallel stages")
        self.task, self.config, self.group = task, config, group
        broadcast_parameters(list(task.model.parameters()), src=0, group=group)
        self.net = task.lifted_network(task.model)
        self.objective = lifted_objective(self.net, config)
        self.batched = False
        self.solver = LayerParallelSolver(self.objective, config.solver, group=group, grid=grid,
                                          **solver_options(config))
        self.world_rank = torch.distributed.get_rank()
        inputs, _ = task.train_batch(None)
        self.solver.init_store(inputs)
        self.store = None

    @property
    def is_writer(self) -> bool:
        return self.world_rank == 0

    def set_lr(self, lr: float) -> None:
        stage = self.solver.solver
        if stage.adam is not None:
            for group in stage.adam.param_groups:
                group["lr"] = lr
        stage.lr = float(lr)

    def __call__(self, ids: torch.Tensor | None) -> float:
        """One sweep; returns this stage's part of the batch objective (:meth:`sum_values`
        completes it), so no rank waits for the others at the end of a sweep."""
        inputs, targets = self.task.train_batch(ids)
        return self.solver.step(inputs, targets, ids, total=False)

    def sum_values(self, values: list[float]) -> list[float]:
        """The batch objectives of an epoch from every stage's parts (one all-reduce)."""
        return self.solver.sum_stages(values)

    def sync_model(self) -> None:
        self.solver.sync_model()

    def state_dict(self) -> dict:
        """Every stage's solver state and all states by sample id (collective; rank 0 keeps them)."""
        # the stages of one pipeline (data replicas hold the same solver state)
        stages = [None] * self.solver.link.world
        torch.distributed.all_gather_object(stages, self.solver.solver.state_dict(),
                                            group=self.solver.group)
        states = StateStore(self.solver.gather_states()).state_dict()
        return {"solver": {"bounds": [list(b) for b in self.solver.bounds], "stages": stages},
                "states": states}

    def load_state_dict(self, d: dict) -> None:
        saved = d["solver"].get("bounds") if isinstance(d.get("solver"), dict) else None
        mine = [list(b) for b in self.solver.bounds]
        if saved != mine:
            raise ValueError(f"resume: the checkpoint's layer stages are {saved}; this run's are {mine} "
                             "(resume layer-parallel training with the same number of stages)")
        self.solver.solver.load_state_dict(d["solver"]["stages"][self.solver.rank])
        stage, shard = self.solver.stage, self.solver.shard
        stage.store = StateStore({s: v if shard is None else shard.rows(v)
                                  for s, v in StateStore.from_state_dict(d["states"]).states.items()
                                  if s in stage.view.free_states})
