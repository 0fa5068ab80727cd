"""The one training loop: every task, lifted and backprop alike.

``train(task, TrainConfig(...), checkpoint=PATH, resume=PATH, callbacks=(), progress=False)``
resolves the config (:func:`.config.resolve`: engine < task presets < caller), builds the step
(:class:`.steps.LiftedStep` or :class:`.steps.BackpropStep`; under torchrun the data-parallel
steps with ``distributed=True``, the layer-parallel step with ``layer_parallel=STAGES``) and runs
:class:`Trainer`:

* epochs and/or a time budget (training seconds, evaluation excluded; whichever ends first);
  each epoch visits a seeded permutation of the training samples in mini-batches;
* validation every ``eval_every`` epochs; with ``select='best-val'`` the returned model is the one
  with the best validation metric (the test set is evaluated for the report only, never to
  choose anything);
* a checkpoint (:mod:`lifted_inverse.networks.checkpoint`) every ``checkpoint_every`` epochs and
  at the end, written atomically; it holds the selected weights for users of the network and,
  for exact resume, the last weights, the step's state, the sampler's RNG, the history and the
  selection so far. Resuming with another task or other settings is an error naming the setting;
* callbacks ``cb(record, trainer) -> bool | None`` after each epoch (True stops training) and a
  tqdm bar.

The result (also ``metrics.json``'s content) has ``history`` (one record per epoch: ``epoch``,
``objective``, ``seconds`` (cumulative training time), ``epoch_seconds``, ``layer_update`` (per
weight layer in forward order, ``‖W_after − W_before‖_F`` over the epoch), ``val_<metric>`` and
``test_<metric>`` when evaluated), ``train_objective``, ``selected_epoch``, ``val_<metric>`` and
``test_<metric>`` of the returned model, ``layer_change`` (per weight layer,
``‖W_end − W_init‖_F / ‖W_init‖_F`` of the returned model: whether every layer learned),
``seconds``, ``seconds_per_epoch`` and ``config`` (the resolved config with the source of each
value).

Denormal floats are flushed to zero while training: Adam's second moments of tiny gradients
otherwise fall into the subnormal range, where x86 CPUs are much slower.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .config import TrainConfig, resolve
from .steps import BackpropStep, LiftedStep

#: settings that must match between a checkpoint and the run that resumes it (others, such as
#: ``epochs`` or ``time_budget``, may grow)
RESUME_KEYS = ("method", "solver", "batch_size", "lr", "lr_schedule", "seed", "state_steps",
               "state_init", "state_order", "state_lr", "state_sweeps", "state_tol", "lam", "rho",
               "penalty_growth", "penalty_max", "tau", "inner_sweeps",
               "momentum", "power_iterations", "batched_layers", "regularizer", "reg_strength",
               "select", "fresh_noise", "eval_every")


def make_step(task, config: TrainConfig):
    """The step object of ``config.method`` (config resolved)."""
    if config.layer_parallel:
        from .distributed import LayerParallelStep
        return LayerParallelStep(task, config)
    if config.method == "backprop":
        if config.distributed:
            from .distributed import DataParallelBackpropStep
            return DataParallelBackpropStep(task, config)
        return BackpropStep(task, config)
    if config.distributed:
        from .distributed import DataParallelLiftedStep
        return DataParallelLiftedStep(task, config)
    return LiftedStep(task, config)


def weight_layers(model) -> list:
    """The weight tensors of ``model`` (parameters with two or more dimensions: dense and
    convolution weights, not biases), in registration order, which for the project's networks
    is forward order."""
    return [p for p in model.parameters() if p.ndim >= 2]


def _progress(total, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="epoch")


class Trainer:
    """The training loop of the module docstring, for one task and one resolved config."""

    def __init__(self, task, config: TrainConfig, *, checkpoint: str | None = None,
                 callbacks: Sequence[Callable] = (), progress: bool = False):
        if config.epochs is None and config.time_budget is None:
            raise ValueError("epochs: give a number of epochs or a time budget")
        self.task, self.config = task, config
        self.checkpoint_path = checkpoint
        self.callbacks = list(callbacks)
        self.progress = progress
        torch.manual_seed(config.seed)
        self.step = make_step(task, config)
        self.is_writer = getattr(self.step, "is_writer", True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: list[dict] = []
        self.seconds = 0.0
        self.epoch = 0
        self.best = {"epoch": 0, "metric": -math.inf, "state": None}
        self.last_checkpoint_epoch = None
        self.initial_weights = [w.detach().clone() for w in weight_layers(task.model)]

    # ---- checkpoints ----------------------------------------------------------------------
    def _trainer_state(self, step_state: dict) -> dict:
        model_state = {k: v.detach().clone() for k, v in self.task.model.state_dict().items()}
        return {"step": step_state, "rng": self.generator.get_state(), "history": self.history,
                "seconds": self.seconds, "epoch": self.epoch, "last_model": model_state,
                "initial_weights": self.initial_weights,
                "best": {"epoch": self.best["epoch"], "metric": self.best["metric"],
                         "state": self.best["state"]}}

    def save(self) -> None:
        step_state = self.step.state_dict()     # collective for a data-parallel step: all ranks call it
        self.last_checkpoint_epoch = self.epoch
        if not self.is_writer or self.checkpoint_path is None:
            return
        from ..networks.checkpoint import save_checkpoint

        selected = self.best["state"] if self.config.select == "best-val" and self.best["state"] is not None \
            else None
        save_checkpoint(self.checkpoint_path, self.task.model, state_dict=selected,
                        description=self.task.describe(), config=self.config.as_json(),
                        epoch=self.epoch, metrics=self._selection_summary(),
                        trainer_state=self._trainer_state(step_state))

    def resume(self, path: str) -> None:
        """Continue from the checkpoint ``path`` written by :meth:`save` for the same task and
        settings (``ValueError`` naming the first setting that differs)."""
        from ..networks.checkpoint import load_checkpoint

        device = next(iter(self.task.model.parameters())).device
        ck = load_checkpoint(path, map_location=device, what="resume")
        spec = ck.spec
        task_name = (spec.get("description") or {}).get("task")
        if task_name != self.task.name:
            raise ValueError(f"resume: {path} was written for task {task_name!r}, not {self.task.name!r}")
        if ck.trainer_state is None:
            raise ValueError(f"resume: {path} holds a network but no training state to resume")
        saved = spec.get("config") or {}
        mine = self.config.as_json()
        for key in RESUME_KEYS:
            if saved.get(key) != mine.get(key):
                raise ValueError(f"resume: {path} was trained with {key}={saved.get(key)!r}; this run "
                                 f"has {key}={mine.get(key)!r} (resume with the same settings)")
        st = ck.trainer_state
        self.task.model.load_state_dict(st["last_model"])
        self.step.load_state_dict(st["step"])
        self.generator.set_state(st["rng"])
        self.history = list(st["history"])
        self.seconds = float(st["seconds"])
        self.epoch = int(st["epoch"])
        self.best = dict(st["best"])
        self.initial_weights = list(st["initial_weights"])

    # ---- the loop -------------------------------------------------------------------------
    def _selection_summary(self) -> dict:
        metric = self.best["metric"]
        return {"selected_epoch": self.best["epoch"],
                f"val_{self.task.metric}": metric if math.isfinite(metric) else None}

    def _done(self) -> bool:
        cfg = self.config
        return (cfg.epochs is not None and self.epoch >= cfg.epochs) or \
            (cfg.time_budget is not None and self.seconds >= cfg.time_budget)

    def _agreed(self, seconds: float) -> float:
        """``seconds`` as every rank of a distributed run sees it: the largest over the ranks.
        Ranks that read their own clocks would stop a time budget at different batches (and then
        wait on each other's collectives for ever) and take different cosine steps."""
        if not (self.config.distributed or self.config.layer_parallel):
            return seconds
        from ..lifted.distributed import rank_and_world

        if rank_and_world()[1] == 1:
            return seconds
        t = torch.tensor([seconds], dtype=torch.float64, device=self.task.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t[0])

    def _progress_fraction(self, epoch_fraction: float, seconds: float) -> float:
        cfg = self.config
        t = 0.0
        if cfg.epochs:
            t = epoch_fraction / cfg.epochs
        if cfg.time_budget is not None:
            t = max(t, seconds / cfg.time_budget)
        return min(max(t, 0.0), 1.0)

    def _run_epoch(self) -> dict:
        cfg, task = self.config, self.task
        if cfg.fresh_noise:
            task.new_epoch(self.epoch, cfg.seed)
        self.step.set_epoch(self.epoch)
        n = task.n_train
        bs = n if not cfg.batch_size else min(int(cfg.batch_size), n)
        before = [w.detach().clone() for w in weight_layers(task.model)]
        t0 = time.perf_counter()
        values, weights = [], []
        if bs >= n:
            batches = [None]
        else:
            perm = torch.randperm(n, generator=self.generator).to(task.device)
            batches = [perm[s:s + bs] for s in range(0, n, bs)]
        timed = cfg.time_budget is not None
        for i, ids in enumerate(batches):
            if cfg.lr_schedule == "cosine":
                elapsed = self.seconds + time.perf_counter() - t0
                t = self._progress_fraction(self.epoch + i / len(batches),
                                            self._agreed(elapsed) if timed else elapsed)
                self.step.set_lr(cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t)))
            values.append(self.step(ids))
            weights.append(n if ids is None else len(ids))
            if timed and self._agreed(self.seconds + time.perf_counter() - t0) >= cfg.time_budget:
                break
        sync = getattr(self.step, "sync_model", None)
        if sync is not None:    # layer-parallel: each rank has updated only its stage's weights
            sync()
        complete = getattr(self.step, "sum_values", None)
        if complete is not None:    # layer-parallel: each value is one stage's part
            values = complete(values)
        dt = self._agreed(time.perf_counter() - t0)
        self.seconds += dt
        self.epoch += 1
        objective = sum(v * w for v, w in zip(values, weights)) / sum(weights)
        if not math.isfinite(objective):
            raise FloatingPointError(f"training diverged at epoch {self.epoch}: objective {objective}")
        update = [float(torch.linalg.vector_norm(w.detach() - b))
                  for w, b in zip(weight_layers(task.model), before)]
        record = {"epoch": self.epoch, "objective": objective, "seconds": self.seconds, "epoch_seconds": dt,
                  "layer_update": update}
        if self.epoch % cfg.eval_every == 0 or self._done():
            record.update(self._evaluate_and_select())
        return record

    def _evaluate_and_select(self) -> dict:
        task, model = self.task, self.task.model
        out = {}
        if task.has_validation:
            val = task.evaluate(model, "val")
            out.update(val)
            metric = val[f"val_{task.metric}"]
            if metric > self.best["metric"]:
                self.best = {"epoch": self.epoch, "metric": metric,
                             "state": copy.deepcopy(model.state_dict())}
        out.update({k: v for k, v in task.evaluate(model, "test").items() if not isinstance(v, dict)})
        return out

    def fit(self) -> dict:
        cfg, task = self.config, self.task
        total = cfg.epochs if cfg.epochs is not None else None
        bar = _progress(total, self.epoch, self.progress, f"{task.name} {cfg.method}/{cfg.solver}")
        flushed = torch.set_flush_denormal(True)
        try:
            while not self._done():
                record = self._run_epoch()
                self.history.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(obj=f"{record['objective']:.4g}",
                                    **{k: f"{v:.4g}" for k, v in record.items() if k.startswith("val_")})
                stop = any(cb(record, self) for cb in self.callbacks)
                if self.epoch % cfg.checkpoint_every == 0 or self._done() or stop:
                    self.save()
                if stop:
                    break
        finally:
            if flushed:
                torch.set_flush_denormal(False)
            if bar is not None:
                bar.close()
        if self.history and self.last_checkpoint_epoch != self.epoch:
            self.save()
        return self.result()

    def result(self) -> dict:
        cfg, task, model = self.config, self.task, self.task.model
        selected = self.epoch
        if cfg.select == "best-val" and self.best["state"] is not None:
            model.load_state_dict(self.best["state"])
            selected = self.best["epoch"]
        final = {}
        if task.has_validation:
            final.update(task.evaluate(model, "val"))
        final.update(task.evaluate(model, "test"))
        epochs_run = max(len(self.history), 1)
        change = [float(torch.linalg.vector_norm(w.detach() - w0) / torch.linalg.vector_norm(w0).clamp_min(1e-30))
                  for w, w0 in zip(weight_layers(model), self.initial_weights)]
        return {
            "task": task.name, "method": cfg.method, "solver": cfg.solver,
            "epochs": len(self.history), "selected_epoch": selected, "seed": cfg.seed,
            **final, **task.report(model),
            "train_objective": [h["objective"] for h in self.history], "layer_change": change,
            "seconds": self.seconds, "seconds_per_epoch": self.seconds / epochs_run,
            "threads": torch.get_num_threads(), "device": str(task.device),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "history": self.history,
            "description": task.describe(), "config": cfg.as_json(),
        }


def resolve_for(task, config: TrainConfig) -> TrainConfig:
    """``config`` resolved over ``task``'s presets; a task without a validation set selects the
    last epoch (an explicit ``select='best-val'`` is an error there)."""
    config = resolve(config, task.presets, task.name)
    if not task.has_validation and config.select == "best-val" and config.sources.get("select") == "user":
        raise ValueError(f"select: task {task.name!r} has no validation set to select on")
    if not task.has_validation:
        config = replace(config, select="last", sources={**config.sources, "select": "task"})
    return config


def train(task, config: TrainConfig, *, checkpoint: str | None = None, resume: str | None = None,
          callbacks: Sequence[Callable] = (), progress: bool = False) -> dict:
    """Train ``task.model`` in place by ``config`` (see the module docstring); returns the result."""
    config = resolve_for(task, config)
    trainer = Trainer(task, config, checkpoint=checkpoint, callbacks=callbacks, progress=progress)
    if resume:
        trainer.resume(resume)
    return trainer.fit()
