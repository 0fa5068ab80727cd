"""The two update rules the trainer alternates with evaluation: lifted and backprop.

A step object trains ``task.model`` in place, one mini-batch per call:

* :class:`LiftedStep` — one sweep of the lifted engine (:mod:`lifted_inverse.lifted`) on the
  batch: state blocks, then W-blocks, by the configured solver (BCD, Nesterov, heavy ball, Adam
  on blocks, ISGM). The lifted view comes from ``task.lifted_network(model)``; per-sample states
  live in a :class:`~lifted_inverse.lifted.solvers.StateStore` when ``state_init='store'``.
* :class:`BackpropStep` — one Adam / SGD step on ``task.backprop_loss`` (the loss the lifted output
  layer carries), the honest baseline on the same model, data and batches.

Both return the batch objective (lifted: ``Σ_l P_l`` at the W-step; backprop: the loss), expose
``set_epoch``, ``set_lr`` (for schedules) and ``state_dict`` / ``load_state_dict`` with tensors,
numbers and strings only, so a checkpoint reads back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import torch

from ..lifted.batched import BatchedLiftedSolver, uniform_chain
from ..lifted.objective import LiftedObjective, WeightRegularizer
from ..lifted.penalties import HomotopySchedule
from ..lifted.solvers import LiftedSolver, StateStore
from .config import TrainConfig


def lifted_objective(net, config: TrainConfig) -> LiftedObjective:
    """The lifted objective of ``net`` by the (resolved) ``config``: method, λ, ρ, regulariser,
    penalty continuation (λ and ρ times ``min(penalty_max, penalty_growth^epoch)``)."""
    reg = WeightRegularizer(config.regularizer, config.reg_strength) if config.regularizer else None
    homotopy = None if config.penalty_growth is None else HomotopySchedule(
        1.0, config.penalty_growth, 100.0 if config.penalty_max is None else config.penalty_max)
    return LiftedObjective(net, config.method, lam=config.lam, rho=config.rho, regularizer=reg,
                           homotopy=homotopy)


def solver_options(config: TrainConfig) -> dict:
    """The keyword arguments of :class:`~lifted_inverse.lifted.solvers.LiftedSolver` that a
    (resolved) ``config`` sets, the solver's name excepted."""
    # τ = inf: ISGM without its proximal term (η = 1/τ = 0)
    return {"lr": config.lr, "state_steps": config.state_steps, "momentum": config.momentum,
            "prox_weight": 1.0 / config.tau, "inner_sweeps": config.inner_sweeps,
            "power_iterations": config.power_iterations, "reduce_fn": config.reduce_fn,
            "state_init": config.state_init, "state_order": config.state_order,
            "state_lr": config.state_lr, "state_sweeps": config.state_sweeps,
            "state_tol": config.state_tol}


class LiftedStep:
    """One lifted sweep per mini-batch (see the module docstring)."""

    def __init__(self, task, config: TrainConfig):
        self.task, self.config = task, config
        self.net = task.lifted_network(task.model)
        self.objective = lifted_objective(self.net, config)
        batched = config.batched_layers
        if batched and not uniform_chain(self.net):
            raise ValueError(f"batched_layers: task {task.name!r} is not a uniform chain of dense "
                             "layers; the layer-parallel kernels do not apply")
        if batched is None:     # unset: the kernels wherever they apply
            batched = bool(uniform_chain(self.net))
        self.batched = batched
        solver_cls = BatchedLiftedSolver if batched else LiftedSolver
        self.solver = solver_cls(self.objective, config.solver, **solver_options(config))
        self.store = None if self.solver.state_init == "forward" else self.initial_store()

    def initial_store(self) -> StateStore:
        """Per-sample states of the forward pass of the whole training set."""
        inputs, _ = self.task.train_batch(None)
        return StateStore.from_forward(self.objective, inputs)

    def set_epoch(self, epoch: int) -> None:
        self.objective.set_epoch(epoch)

    def set_lr(self, lr: float) -> None:
        if self.solver.adam is not None:
            for group in self.solver.adam.param_groups:
                group["lr"] = lr
        self.solver.lr = float(lr)

    def __call__(self, ids: torch.Tensor | None) -> float:
        inputs, targets = self.task.train_batch(ids)
        return self.solver.step(inputs, targets, self.store, ids)

    def state_dict(self) -> dict:
        return {"solver": self.solver.state_dict(),
                "states": None if self.store is None else self.store.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.solver.load_state_dict(d["solver"])
        if d.get("states") is not None:
            self.store = StateStore.from_state_dict(d["states"])


class BackpropStep:
    """One optimiser step on ``task.backprop_loss`` per mini-batch (see the module docstring)."""

    def __init__(self, task, config: TrainConfig):
        self.task, self.config = task, config
        params = [p for p in task.model.parameters() if p.requires_grad]
        wd = config.reg_strength if config.regularizer == "l2" else 0.0
        if config.solver == "adam":
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=wd)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=wd)

    def set_epoch(self, epoch: int) -> None:
        pass

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, ids: torch.Tensor | None) -> float:
        inputs, targets = self.task.train_batch(ids)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task.backprop_loss(self.task.model, inputs, targets)
        loss.backward()
        self.optimizer.step()
        self.task.after_update(self.task.model)
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"solver": self.optimizer.state_dict(), "states": None}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["solver"])
