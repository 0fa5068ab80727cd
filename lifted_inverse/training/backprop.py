"""Backprop baseline: the same model, data, batch size and loop as lifted training.

The loss is the one the lifted output layer carries (``Task.backprop_loss``: cross-entropy for
classification, ``½‖σ(z) − t‖²`` for regression); the optimiser is Adam (default lr 1e-3) or
SGD with momentum 0.9 (default lr 0.05), with the optional ℓ2 weight decay of ``--regularizer l2``.
"""
from __future__ import annotations

import torch

from .tasks import Task


class BackpropTrainer:
    """Mini-batch backprop on ``task.model``; interface of :class:`~.loop.LiftedTrainer`."""

    def __init__(self, task: Task, config):
        self.task, self.config = task, config
        params = [p for p in task.model.parameters() if p.requires_grad]
        wd = config.reg_strength if config.regularizer == "l2" else 0.0
        if config.regularizer == "l1":
            raise ValueError("regularizer: l1 is only available for lifted training")
        if config.solver == "adam":
            self.optimizer = torch.optim.Adam(params, lr=config.lr or 1e-3, weight_decay=wd)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr or 0.05, momentum=0.9, weight_decay=wd)

    def set_epoch(self, epoch: int) -> None:
        pass

    def train_batch(self, ids: torch.Tensor | None) -> float:
        x, t = self.task.x_train, self.task.t_train
        if ids is not None:
            x, t = x.index_select(0, ids), t.index_select(0, ids)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task.backprop_loss(self.task.model(x), t)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"solver": self.optimizer.state_dict(), "states": None}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["solver"])
