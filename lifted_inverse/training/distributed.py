"""Data-parallel lifted step: the :class:`~.steps.LiftedStep` of one rank of a process group.

Selected by ``TrainConfig(distributed=True)`` (``lifted-inverse train --distributed`` under
torchrun). Every rank builds the same task and model; rank 0's weights are broadcast so the
replicas start identical. The rank owns the contiguous shard of training samples
:class:`~lifted_inverse.lifted.distributed.Shard` and keeps lifted states for those samples only.
Mini-batches are drawn from the same seeded permutation on every rank (global ids); a rank works
on the part of each batch it owns (possibly none) and the solver's ``reduce_fn``
(:class:`~lifted_inverse.lifted.distributed.AllReduce`) sums W-gradients and statistics, so the
update equals the single-process one. Checkpoints hold the states gathered by global sample id
(rank 0 writes them) and resume on any number of ranks.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..lifted.distributed import AllReduce, Shard, broadcast_parameters, gather_rows, rank_and_world
from ..lifted.solvers import StateStore
from .config import TrainConfig
from .steps import LiftedStep


class DataParallelLiftedStep(LiftedStep):
    """:class:`~.steps.LiftedStep` over a ``torch.distributed`` group (see module docstring).

    Attributes: ``comm`` (the :class:`AllReduce` hook, with its byte log), ``shard``, ``rank``,
    ``world_size``, ``is_writer`` (rank 0: writes checkpoints and metrics).
    """

    def __init__(self, task, config: TrainConfig, group=None):
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise ValueError("distributed: no torch.distributed process group is initialised; call "
                             "lifted_inverse.lifted.distributed.init_from_env() (or launch with torchrun)")
        if config.method == "backprop":
            raise ValueError("distributed: data-parallel training is implemented for lifted methods only")
        self.group = group
        self.rank, self.world_size = rank_and_world(group)
        self.shard = Shard.of(task.n_train, self.rank, self.world_size)
        self.comm = AllReduce(group)
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
        x, t = self.task.train_batch(mine.to(self.task.device))
        return self.solver.step(x, t, self.store, local.to(self.task.device))

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
