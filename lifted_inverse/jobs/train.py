"""The ``train`` job: task → trainer → checkpoint, metrics and figures in one output folder.

``run_training(task_name, task_config, train_config, out, ...)`` is what ``lifted-inverse train``
calls after parsing. Outputs (rank 0 only under data parallelism), each written atomically:
``OUT/checkpoint.pt`` (every ``checkpoint_every`` epochs and at the end: a run killed after some
epochs leaves the checkpoint of its last finished one), ``OUT/metrics.json`` (the trainer's
result), ``OUT/convergence.png`` and the task's own figures (imaging: reconstructions,
PSNR against time). With ``compare=True`` the other family (lifted ↔ backprop) is trained on the
same task for the same wall-clock into ``OUT/<method>``.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..io import write_json
from ..runtime import set_threads  # re-exported: the CLI's --threads of every command
from ..training import TaskConfig, TrainConfig, available_tasks, make_step, make_task, train
from ..training.plots import plot_convergence
from ..training.trainer import resolve_for

__all__ = ["TaskConfig", "TrainConfig", "available_tasks", "init_distributed", "plan_training",
           "run_training", "set_threads"]


def _check_out(out: Path, resume: str | None) -> None:
    """Refuse an output folder that cannot be written before any work is done."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise ValueError(f"out: cannot write into {probe}")
    ck = out / "checkpoint.pt"
    if resume is None and ck.exists() and any(out.glob("metrics.json")):
        # a finished run lives here: continuing silently would overwrite its checkpoint
        raise ValueError(f"out: {out} already holds a finished run (metrics.json, checkpoint.pt); "
                         "choose another folder or continue it with --resume")


def plan_training(task_name: str, task_config: TaskConfig, config: TrainConfig) -> dict:
    """Everything a run does before its first epoch: build the task, resolve the config, build the
    update step. Returns the resolved config (JSON) and the task description; raises the error a
    real run would raise for an option that does not apply."""
    task = make_task(task_name, task_config)
    resolved = resolve_for(task, config)
    make_step(task, resolved)
    return {"task": task.name, "description": task.describe(), "config": resolved.as_json()}


def run_training(task_name: str, task_config: TaskConfig, config: TrainConfig, out: str | Path, *,
                 resume: str | None = None, progress: bool = False, compare: bool = False,
                 is_writer: bool = True) -> dict:
    """Build ``task_name``, train it by ``config`` and write the outputs (module docstring)."""
    out = Path(out)
    if is_writer:
        _check_out(out, resume)
    task = make_task(task_name, task_config)
    result = train(task, config, checkpoint=str(out / "checkpoint.pt"), resume=resume,
                   progress=progress)
    if not is_writer:
        return result
    label = f"{result['method']}/{result['solver']}"
    histories = {label: result["history"]}
    if compare:
        other = replace(config, method="bregman" if result["method"] == "backprop" else "backprop",
                        solver="adam", epochs=None, time_budget=result["seconds"], sources={},
                        **{k: None for k in ("state_steps", "state_init", "state_order", "state_lr",
                                             "lam", "rho", "tau", "inner_sweeps", "momentum",
                                             "power_iterations", "batched_layers", "lr")})
        other_task = make_task(task_name, task_config)
        other_out = out / other.method
        res2 = train(other_task, other, checkpoint=str(other_out / "checkpoint.pt"), progress=progress)
        write_json(other_out / "metrics.json", res2)
        histories[f"{res2['method']}/{res2['solver']}"] = res2["history"]
        result["compare"] = {k: res2.get(k) for k in ("method", "solver", "seconds", "epochs",
                                                       f"test_{task.metric}", f"val_{task.metric}")}
    write_json(out / "metrics.json", result)  # strict JSON: inf / nan as null + reason
    plot_convergence(histories, out / "convergence.png", metric=f"test_{task.metric}")
    task.write_figures(task.model, label, out)
    return result


def init_distributed(device: str, what: str = "distributed") -> tuple[str, bool]:
    """Join the process group torchrun describes (:func:`lifted_inverse.lifted.distributed.init_from_env`):
    ``(this rank's device, whether this rank writes the outputs)``; errors name ``what``."""
    from ..lifted.distributed import init_from_env

    info = init_from_env(device, what=what)
    return str(info.device), info.is_main
