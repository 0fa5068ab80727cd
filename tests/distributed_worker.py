"""Worker for tests/test_distributed.py, launched as ``python -m torch.distributed.run
--nproc-per-node P tests/distributed_worker.py OUT_DIR`` (the torchrun entry point).

Every rank builds the same small synthetic task, trains it data-parallel with each solver for a
few epochs of mini-batch block sweeps in float64 (``TrainConfig(distributed=True)``), and rank 0
saves the final weights, the objective history and the communication log summary to
``OUT_DIR/result_P.pt``; checkpoints go to ``OUT_DIR/ckpt_<solver>_P.pt``. With a second
argument (a BCD checkpoint written after ``EPOCHS`` epochs by a run on another number of
ranks) it also resumes that run for one more epoch. Not collected by pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import sys
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
    return TrainConfig(method="bregman", solver=solver, epochs=EPOCHS, batch_size=BATCH, lr=lr,
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
                       callbacks=[lambda record, trainer: trainers.append(trainer) and None])
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


if __name__ == "__main__":
    main(*sys.argv[1:3])
