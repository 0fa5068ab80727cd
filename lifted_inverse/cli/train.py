"""``lifted-inverse train``: train a registered task by a lifted method or backprop.

Writes ``DIR/metrics.json`` (``test_accuracy`` or ``test_psnr``, ``train_objective``,
``seconds``, ``seconds_per_epoch``, ``history``, …), ``DIR/convergence.png`` and
``DIR/checkpoint.pt`` (resumable with ``--resume DIR/checkpoint.pt``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..io import atomic_write_text
from ..runtime import checked_device

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def register(subparsers) -> None:
    from ..lifted.solvers import SOLVERS
    from ..training.loop import BACKPROP_SOLVERS, METHODS

    p = subparsers.add_parser("train", help="train a network (lifted Bregman/Fenchel/MAC or backprop)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits-mlp", help="registered task (default digits-mlp; "
                   "see --list-tasks)")
    p.add_argument("--list-tasks", action="store_true", help="print the registered tasks and exit")
    p.add_argument("--method", default="bregman", choices=METHODS)
    p.add_argument("--solver", default=None, choices=sorted(set(SOLVERS) | set(BACKPROP_SOLVERS)),
                   help="lifted: bcd, nesterov, heavyball, adam, isgm; backprop: adam, sgd "
                   "(default adam for both)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size; 0 = full batch "
                   "(default 64; imaging tasks: 32, unrolled-ct 8)")
    p.add_argument("--lr", type=float, default=None, help="step size / step multiplier "
                   "(default per solver)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-steps", type=int, default=None,
                   help="prox-gradient steps per state block (default 1; pnn-denoise 2)")
    p.add_argument("--state-init", choices=("store", "forward"), default=None,
                   help="hidden states of a mini-batch: from the per-sample store or a forward pass with "
                   "the current weights (default: the task's setting, else store)")
    p.add_argument("--state-order", choices=("bottom-up", "top-down"), default=None,
                   help="colour groups of a state sweep from the input or from the output (default: the "
                   "task's setting, else bottom-up)")
    p.add_argument("--inner-sweeps", type=int, default=None,
                   help="ISGM inner sweeps per mini-batch (default 3; imaging tasks 1)")
    p.add_argument("--tau", type=float, default=1.0, help="ISGM proximal weight τ")
    p.add_argument("--power-iterations", type=int, default=3,
                   help="warm-started power iterations per W-step for the W step size")
    p.add_argument("--batched-layers", action=argparse.BooleanOptionalAction, default=True,
                   help="layer-parallel kernels for uniform-chain MLPs (default; same results, 2x per "
                   "sweep for deep chains at small batches); --no-batched-layers: per-layer solver")
    p.add_argument("--lam", type=float, default=None, help="hidden-layer penalty weight λ (default: the "
                   "task's setting for the method and solver, else 1)")
    p.add_argument("--state-lr", type=float, default=None,
                   help="state-block step state_lr/L in (0, 2) (default: the task's setting, else 1)")
    p.add_argument("--regularizer", choices=("l1", "l2"), default=None)
    p.add_argument("--reg-strength", type=float, default=1e-4)
    p.add_argument("--out", required=False, default=None, help="output folder")
    p.add_argument("--data", default=None, help="data folder (e.g. MNIST IDX files)")
    p.add_argument("--noise", type=float, default=None, help="noise level for denoising tasks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--resume", default=None, help="checkpoint to resume from")
    p.add_argument("--progress", action="store_true", help="show a tqdm progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel lifted training, one process per rank: launch with "
                   "`torchrun --nproc-per-node N -m lifted_inverse train --distributed ...` (gloo on "
                   "CPU, nccl on CUDA; rank 0 writes the outputs)")
    img = p.add_argument_group("imaging tasks (pnn-denoise, unrolled-deblur, unrolled-ct)")
    img.add_argument("--time-budget", type=float, default=None,
                     help="stop after this many seconds of training")
    img.add_argument("--compare", action="store_true",
                     help="also train the other method (bregman/backprop) for the same wall-clock")
    img.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                     help="Adam's step over the epochs / time budget (cosine: lr·½(1 + cos πt))")
    img.add_argument("--features", type=int, default=None, help="channels F of L_k")
    img.add_argument("--layers", type=int, default=None, help="unrolled layers K")
    img.add_argument("--n-train", type=int, default=None, help="training patches / images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import TaskConfig, TrainConfig, available_tasks, make_task, train
    from ..training.plots import plot_convergence

    if args.list_tasks:
        print("\n".join(available_tasks()))
        return 0
    if args.out is None:
        raise ValueError("--out: an output folder is required")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.batch_size is not None and args.batch_size < 0:
        raise ValueError(f"--batch-size: must be >= 0, got {args.batch_size}")
    checked_device(args.device, "--device")
    from ..training.imaging import IMAGING_TASKS, run_cli

    dist_info = None
    if args.distributed:
        if args.task in IMAGING_TASKS or args.method == "backprop":
            raise ValueError("--distributed: implemented for the lifted methods on the non-imaging "
                             f"tasks, not task {args.task!r} with --method {args.method}")
        from ..lifted.distributed import init_from_env
        dist_info = init_from_env(args.device)
        args.device = str(dist_info.device)
    if args.task in IMAGING_TASKS:
        return run_cli(args)
    solver = args.solver or "adam"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(args.task, TaskConfig(seed=args.seed, data=args.data, noise=args.noise,
                                           device=args.device, dtype=DTYPES[args.dtype]))
    config = TrainConfig(method=args.method, solver=solver, epochs=args.epochs,
                         batch_size=64 if args.batch_size is None else (args.batch_size or None),
                         lr=args.lr, seed=args.seed,
                         state_steps=1 if args.state_steps is None else args.state_steps,
                         state_init=args.state_init, state_order=args.state_order, state_lr=args.state_lr,
                         inner_sweeps=3 if args.inner_sweeps is None else args.inner_sweeps, tau=args.tau,
                         power_iterations=args.power_iterations, batched_layers=args.batched_layers, lam=args.lam, regularizer=args.regularizer, reg_strength=args.reg_strength,
                         progress=args.progress and (dist_info is None or dist_info.is_main),
                         checkpoint=str(out / "checkpoint.pt"), resume=args.resume,
                         distributed=args.distributed)
    result = train(task, config)
    if dist_info is not None:
        torch.distributed.destroy_process_group()
        if not dist_info.is_main:
            return 0
        result["world_size"] = dist_info.world_size
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    plot_convergence({f"{args.method}/{solver}": result["history"]}, out / "convergence.png",
                     metric=f"test_{task.metric}")
    metric = f"test_{task.metric}"
    print(f"{args.task} {args.method}/{solver}: {metric} {result[metric]:.4f}, "
          f"{result['seconds_per_epoch'] * 1e3:.1f} ms/epoch, {result['epochs']} epochs -> {out}")
    return 0
