"""Worker for tests/test_distributed.py, launched as ``python -m torch.distributed.run
--nproc-per-node P tests/distributed_worker.py OUT_DIR`` (the torchrun entry point).

Every rank builds the same small synthetic task, trains it data-parallel with each solver for a
few epochs of mini-batch block sweeps in float64 (``TrainConfig(distributed=True)``), and rank 0
saves the final weights, the objective history and the communication log summary to
``OUT_DIR/result_P.pt``; checkpoints go to ``OUT_DIR/ckpt_<solver>_P.pt``. With a second
argument (a BCD checkpoint written after ``EPOCHS`` epochs by a run on another number of
ranks) it also resumes that run for one more epoch.

``distributed_worker.py --more OUT_DIR`` (:func:`main_more`): a small PNN trained data-parallel
(lifted BCD and Adam backprop), the synthetic task by data-parallel backprop, layer-parallel
sweeps (:class:`~lifted_inverse.lifted.layer_parallel.LayerParallelSolver`) of an MLP, a PNN and
an unrolled deblurring network on fixed batches, and layer-parallel training through the trainer
(straight, and two epochs plus a resumed third); rank 0 saves ``OUT_DIR/more_P.pt``.
``distributed_worker.py --grid OUT_DIR`` on 4 ranks (:func:`main_grid`): layer-parallel sweeps
on a 2 × 2 process grid (2 stages, each data parallel over 2 replicas).
Not collected by pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

SOLVERS = ("bcd", "nesterov", "heavyball", "adam", "isgm", "bcd-forward")
#: run names that are a solver plus options: states from the forward pass, top-down, 1.9/L
VARIANTS = {"bcd-forward": ("bcd", {"state_init": "forward", "state_order": "top-down", "state_lr": 1.9})}
EPOCHS = 3
BATCH = 16


def make_synthetic_task(seed: int = 0):
    """50 samples, 12 features, 3 classes; MLP 12-16-16-3 (ReLU, softmax output), float64."""
    from lifted_inverse.lifted.activations import Softmax
    from lifted_inverse.networks import mlp
    from lifted_inverse.training.tasks import Task

    gen = torch.Generator().manual_seed(123)
    x = torch.randn(70, 12, generator=gen, dtype=torch.float64)
    w = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = (x @ w).argmax(dim=1)
    onehot = torch.nn.functional.one_hot(y, 3).to(torch.float64)
    torch.manual_seed(seed)
    model = mlp((12, 16, 16, 3)).to(torch.float64)
    return Task("synthetic", model, x[:50], onehot[:50], x[50:], y[50:], kind="classification",
                output_activation=Softmax(), input_shape=(12,), y_train=y[:50])


def make_config(run: str, **kw):
    from lifted_inverse.training import TrainConfig

    solver, options = VARIANTS.get(run, (run, {}))
    lr = 1e-2 if solver == "adam" else None
    return TrainConfig(method=kw.pop("method", "bregman"), solver=solver, epochs=EPOCHS, batch_size=BATCH, lr=lr,
                       seed=0, **({"inner_sweeps": 2} if solver == "isgm" else {}), **options, **kw)


def main(out_dir: str, resume_from: str | None = None) -> None:
    from lifted_inverse.lifted.distributed import (
        communication_summary,
        init_from_env,
        max_parameter_spread,
    )
    from lifted_inverse.training import train

    info = init_from_env("cpu")
    torch.set_num_threads(1)
    out = Path(out_dir)
    results = {}
    for solver in SOLVERS:
        task = make_synthetic_task()
        ckpt = out / f"ckpt_{solver}_{info.world_size}.pt"
        trainers = []
        result = train(task, make_config(solver, distributed=True), checkpoint=str(ckpt),
                       callbacks=[lambda record, trainer, seen=trainers: seen.append(trainer) and None])
        step = trainers[-1].step
        params = [p.detach().clone() for p in task.model.parameters()]
        summary = communication_summary(step.comm.log, list(step.solver.flat_params))
        results[solver] = {"params": params, "objective": result["train_objective"],
                           "spread": max_parameter_spread(params), "comm": summary,
                           "sweeps": step.solver.sweeps, "shard": len(step.shard)}
    if resume_from:   # resume a checkpoint written by a run on another number of ranks
        task = make_synthetic_task()
        cfg = make_config("bcd", distributed=True)
        cfg.epochs = EPOCHS + 1
        result = train(task, cfg, resume=resume_from, checkpoint=str(out / f"resumed_{info.world_size}.pt"))
        results["resume"] = {"params": [p.detach().clone() for p in task.model.parameters()],
                             "objective": result["train_objective"]}
    if info.is_main:
        torch.save(results, out / f"result_{info.world_size}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


#: imaging runs: a 4-layer PNN with 4 features on twelve 16×16 patches, float64
IMAGING = {"n_train": 12, "features": 4, "layers": 4, "patch": 16, "test_size": 32, "dtype": torch.float64}
#: layer-parallel sweeps: batches of LP_BATCH of LP_SAMPLES samples, LP_SWEEPS sweeps
LP_SAMPLES, LP_BATCH, LP_SWEEPS = 12, 6, 6


_BUILT: dict = {}


def make_imaging_task(name: str = "pnn-denoise"):
    """A fresh copy of a small imaging task (``IMAGING``; built once per process, since loading
    the images dominates) without the baseline report (TV tuning is slow and not what these
    tests compare)."""
    from lifted_inverse.training.imaging import make_imaging_task as make

    if name not in _BUILT:
        _BUILT[name] = make(name, **IMAGING)
    task = copy.deepcopy(_BUILT[name])
    task.report = lambda model: {}
    return task


def imaging_config(method: str, **kw):
    from lifted_inverse.training import TrainConfig

    solver = "adam" if method == "backprop" else "bcd"
    return TrainConfig(method=method, solver=solver, epochs=2, batch_size=5, seed=0, **kw)


def lp_objective(kind: str):
    """``(objective, x, target)`` of a layer-parallel case: ``'mlp'`` (12-16×5-3, softmax),
    ``'resnet'`` (12-16, 3 residual blocks, 3, softmax), ``'pnn-denoise'`` or
    ``'unrolled-deblur'`` (``IMAGING`` sizes), float64."""
    from lifted_inverse.lifted import LiftedObjective, Softmax, lift
    from lifted_inverse.networks import mlp, resnet_mlp

    if kind in ("mlp", "resnet"):
        torch.manual_seed(0)
        model = (mlp((12, 16, 16, 16, 16, 16, 3)) if kind == "mlp" else resnet_mlp(12, 16, 3, blocks=3))
        model = model.to(torch.float64)
        gen = torch.Generator().manual_seed(7)
        x = torch.randn(LP_SAMPLES, 12, generator=gen, dtype=torch.float64)
        t = torch.nn.functional.one_hot(torch.randint(0, 3, (LP_SAMPLES,), generator=gen), 3).double()
        return LiftedObjective(lift(model, output_activation=Softmax()), "bregman"), x, t
    task = make_imaging_task(kind)
    return LiftedObjective(task.lifted_network(task.model), "bregman"), task.y_train, task.x_train


def lp_batches() -> list:
    gen = torch.Generator().manual_seed(11)
    return [torch.randperm(LP_SAMPLES, generator=gen)[:LP_BATCH] for _ in range(LP_SWEEPS)]


#: layer-parallel cases: (network, solver, options)
LP_CASES = {"mlp-bcd": ("mlp", "bcd", {}), "mlp-adam": ("mlp", "adam", {"lr": 1e-2}),
            "resnet-bcd": ("resnet", "bcd", {}),
            "pnn-bcd": ("pnn-denoise", "bcd", {"lr": 1e-2, "state_steps": 2}),
            "deblur-bcd": ("unrolled-deblur", "bcd", {"lr": 1e-2, "state_order": "backward"})}


def run_layer_parallel(case: str, solver_cls, batches=None, **kw) -> dict:
    """Sweeps of ``LP_CASES[case]`` on ``batches`` (default ``lp_batches()``) by ``solver_cls``
    (the distributed or the one-process staged solver); the weights, objectives and the states
    by sample id."""
    kind, solver, options = LP_CASES[case]
    objective, x, t = lp_objective(kind)
    lp = solver_cls(objective, solver, **options, **kw)
    lp.init_store(x)
    values = [lp.step(x[ids], t[ids], ids) for ids in (lp_batches() if batches is None else batches)]
    return {"values": values, "objective": objective, "solver": lp}


def main_more(out_dir: str) -> None:
    from lifted_inverse.lifted.distributed import init_from_env
    from lifted_inverse.lifted.layer_parallel import LayerParallelSolver
    from lifted_inverse.training import train

    info = init_from_env("cpu")
    torch.set_num_threads(1)
    out = Path(out_dir)
    results = {}
    for method in ("bregman", "backprop"):       # data parallel on an imaging task
        task = make_imaging_task()
        trainers = []
        res = train(task, imaging_config(method, distributed=True),
                    callbacks=[lambda record, trainer, seen=trainers: seen.append(trainer) and None])
        absent = torch.tensor([getattr(trainers[-1].step, "absent_steps", 0)])
        torch.distributed.all_reduce(absent)
        results[f"pnn-{method}"] = {"params": [p.detach().clone() for p in task.model.parameters()],
                                    "objective": res["train_objective"], "absent_steps": int(absent)}
    task = make_synthetic_task()
    res = train(task, make_config("adam", distributed=True, method="backprop"))
    results["synthetic-backprop"] = {"params": [p.detach().clone() for p in task.model.parameters()],
                                     "objective": res["train_objective"]}
    for case in LP_CASES:                          # layer-parallel sweeps
        run = run_layer_parallel(case, LayerParallelSolver)
        lp = run["solver"]
        lp.sync_model()
        sent = torch.tensor([lp.link.bytes_sent], dtype=torch.int64)
        torch.distributed.all_reduce(sent)
        results[f"lp-{case}"] = {
            "values": run["values"], "states": lp.gather_states(), "bytes": int(sent),
            "params": [p.detach().clone() for p in run["objective"].net.model.parameters()]}
    for epochs, resume in ((3, None), (2, None), (3, out / "lp_2.pt")):   # through the trainer
        task = make_synthetic_task()
        cfg = make_config("bcd", layer_parallel=2)
        cfg.epochs = epochs
        res = train(task, cfg, checkpoint=str(out / f"lp_{epochs}.pt") if resume is None else None,
                    resume=None if resume is None else str(resume))
        results[f"trainer-lp-{epochs}{'-resumed' if resume else ''}"] = {
            "params": [p.detach().clone() for p in task.model.parameters()],
            "objective": res["train_objective"]}
    results.update(time_budget_runs(info))
    if info.is_main:
        torch.save(results, out / f"more_{info.world_size}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


class _FastClock:
    """A ``time`` module whose ``perf_counter`` runs ``rate`` times as fast as the real one."""

    def __init__(self, rate: float):
        self.rate, self.origin = rate, time.perf_counter()

    def perf_counter(self) -> float:
        return self.origin + self.rate * (time.perf_counter() - self.origin)


def time_budget_runs(info) -> dict:
    """``--time-budget`` runs (data parallel, layer parallel) whose rank 1 reads a clock running
    4x fast: on its own clock it would stop at other batches than rank 0 and leave rank 0
    waiting in a collective. Each rank reports (epochs, batches of its last epoch, objective)."""
    import lifted_inverse.training.trainer as trainer_module
    from lifted_inverse.training import train

    out = {}
    for name, kw in (("dp", {"distributed": True}), ("lp", {"layer_parallel": 2})):
        seen = []
        trainer_module.time = _FastClock(4.0) if info.rank == 1 else time
        try:
            cfg = make_config("bcd", **kw)
            cfg.epochs, cfg.time_budget = None, 0.6
            res = train(make_synthetic_task(), cfg,
                        callbacks=[lambda record, trainer, seen=seen: seen.append(trainer) and None])
        finally:
            trainer_module.time = time
        mine = (len(res["history"]), res["train_objective"][-1], seen[-1].seconds)
        every = [None] * info.world_size
        torch.distributed.all_gather_object(every, mine)
        out[f"time-budget-{name}"] = every
    return out


#: 2-D grid runs (2 stages × 2 replicas): the layer-parallel batches, then one batch all in the
#: first replica's shard (the second replica joins with a stand-in sample)
GRID_CASES = ("mlp-bcd", "pnn-bcd")


def grid_batches() -> list:
    return lp_batches() + [torch.arange(LP_BATCH)]


def run_grid(case: str, solver_cls, **kw) -> dict:
    """``run_layer_parallel`` on ``grid_batches()``."""
    return run_layer_parallel(case, solver_cls, batches=grid_batches(), **kw)


def main_grid(out_dir: str) -> None:
    """4 ranks: layer parallel (2 stages) × data parallel (2 replicas)."""
    from lifted_inverse.lifted.distributed import init_from_env
    from lifted_inverse.lifted.layer_parallel import LayerParallelSolver, ProcessGrid

    info = init_from_env("cpu")
    torch.set_num_threads(1)
    grid = ProcessGrid.of(2)
    results = {}
    for case in GRID_CASES:
        run = run_grid(case, LayerParallelSolver, grid=grid)
        lp = run["solver"]
        lp.sync_model()
        results[case] = {"values": run["values"], "states": lp.gather_states(),
                         "params": [p.detach().clone() for p in run["objective"].net.model.parameters()]}
    from lifted_inverse.training import train

    task = make_synthetic_task()          # through the trainer: --layer-parallel 2 --distributed
    res = train(task, make_config("bcd", layer_parallel=2, distributed=True))
    results["trainer"] = {"params": [p.detach().clone() for p in task.model.parameters()],
                          "objective": res["train_objective"]}
    if info.is_main:
        torch.save(results, Path(out_dir) / f"grid_{info.world_size}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "--grid":
        main_grid(sys.argv[2])
    elif sys.argv[1] == "--more":
        main_more(sys.argv[2])
    else:
        main(*sys.argv[1:3])
