"""``lifted-inverse train``: train a registered task by a lifted method or backprop.

Writes DIR/metrics.json (test and validation metric of the selected model, train_objective,
seconds, seconds_per_epoch, history, the resolved config with the source of every value),
DIR/convergence.png, the task's figures and DIR/checkpoint.pt (every epoch and at the end;
continue a run with --resume DIR/checkpoint.pt). Options left out take the task's setting, then
the engine's; an option that does not apply to the chosen task or method is an error.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: CLI flags whose value goes to the task factory (TaskConfig.extra) rather than the trainer
TASK_EXTRAS = ("features", "layers", "n_train", "hidden_layers", "width", "activation", "blocks",
               "val_fraction", "scanner", "geometry")


def _sweeps(text: str) -> int | str:
    """``--state-sweeps``: ``'auto'`` or an integer (its range is checked with the config)."""
    return text if text == "auto" else int(text)


def register(subparsers) -> None:
    from ..lifted.solvers import SOLVERS, STATE_INITS, STATE_ORDERS
    from ..training.config import BACKPROP_SOLVERS, LR_SCHEDULES, METHODS, SELECTIONS

    p = subparsers.add_parser("train", help="train a network (lifted Bregman/Fenchel/MAC or backprop)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits-mlp", help="registered task (default digits-mlp; see --list-tasks)")
    p.add_argument("--list-tasks", action="store_true", help="print the registered tasks and exit")
    p.add_argument("--method", default=None, choices=METHODS, help="default bregman")
    p.add_argument("--solver", default=None, choices=sorted(set(SOLVERS) | set(BACKPROP_SOLVERS)),
                   help="lifted: bcd, nesterov, heavyball, adam, isgm; backprop: adam, sgd (default adam)")
    p.add_argument("--epochs", type=int, default=None, help="default 20 (or the task's)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds of training (evaluation excluded)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size; 0 = full batch")
    p.add_argument("--lr", type=float, default=None, help="step size / step multiplier (default per solver)")
    p.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                   help="Adam/SGD step over the run (cosine: lr·(1 + cos πt)/2)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--state-steps", type=int, default=None, help="prox-gradient steps per state block")
    p.add_argument("--state-init", choices=STATE_INITS, default=None,
                   help="hidden states of a mini-batch: the per-sample store or a forward pass")
    p.add_argument("--state-order", choices=STATE_ORDERS, default=None,
                   help="colour groups of a state sweep from the input or from the output")
    p.add_argument("--state-lr", type=float, default=None, help="state-block step state_lr/L in (0, 2)")
    p.add_argument("--state-sweeps", type=_sweeps, default=None,
                   help="state sweeps per batch before the W-step, at most (an integer, or 'auto': "
                        "one per hidden state)")
    p.add_argument("--state-tol", type=float, default=None,
                   help="stop the state sweeps once the state objective decreases by less than this "
                        "fraction in a sweep (0: run them all)")
    p.add_argument("--lam", type=float, default=None, help="hidden-layer penalty weight λ")
    p.add_argument("--rho", type=float, default=None, help="weight ρ of residual / x-state couplings")
    p.add_argument("--penalty-growth", type=float, default=None,
                   help="penalty continuation: λ and ρ times min(penalty_max, growth^epoch) (≥ 1)")
    p.add_argument("--penalty-max", type=float, default=None,
                   help="cap of the penalty continuation factor (default 100; needs --penalty-growth)")
    p.add_argument("--tau", type=float, default=None, help="ISGM proximal weight τ")
    p.add_argument("--inner-sweeps", type=int, default=None, help="ISGM inner sweeps per mini-batch")
    p.add_argument("--momentum", type=float, default=None, help="heavy ball β / Nesterov cap")
    p.add_argument("--power-iterations", type=int, default=None,
                   help="warm-started power iterations per W-step for the W step size")
    p.add_argument("--batched-layers", action=argparse.BooleanOptionalAction, default=None,
                   help="layer-parallel kernels for uniform-chain MLPs (default: wherever they apply)")
    p.add_argument("--regularizer", choices=("l1", "l2"), default=None)
    p.add_argument("--reg-strength", type=float, default=None)
    p.add_argument("--select", choices=SELECTIONS, default=None,
                   help="returned weights: best validation metric (default) or the last epoch's")
    p.add_argument("--checkpoint-every", type=int, default=None, help="epochs between checkpoints")
    p.add_argument("--eval-every", type=int, default=None, help="epochs between evaluations")
    p.add_argument("--out", default=None, help="output folder (required)")
    p.add_argument("--data", default=None,
                   help="data of the task; imaging tasks: a folder of images (added to the training "
                   "images) or an HDF5 file of (ground truth, measurement) pairs, as `lifted-inverse "
                   "data` writes or in deepinv's layout (x_train/y_train, x_test/y_test), read in "
                   "mini-batches, operator and noise from the file")
    p.add_argument("--noise", type=float, default=None, help="noise level of the task's measurements")
    p.add_argument("--scanner", default=None,
                   help="unrolled-ct: a CT scanner preset (parallel, lidc: LION's LIDC-IDRI fan beam, 360 "
                        "angles, 900 bins), recorded in the checkpoint's operator spec")
    p.add_argument("--geometry", default=None,
                   help="unrolled-ct: parallel (default) or fan beam (flat detector, 60 angles over [0, 2 pi))")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--resume", default=None, help="checkpoint to continue (same task and settings)")
    p.add_argument("--progress", action="store_true",
                   help="show a tqdm progress bar (default: when stderr is a terminal)")
    p.add_argument("--dry-run", action="store_true",
                   help="build the task and the update step, print the resolved config (with the "
                   "source of every value) as JSON and exit without training")
    p.add_argument("--compare", action="store_true",
                   help="also train the other family (lifted <-> backprop) for the same wall-clock")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training (lifted methods: sample shards; backprop: "
                   "DistributedDataParallel), one process per rank: launch with "
                   "`torchrun --nproc-per-node N -m lifted_inverse train --distributed ...`")
    p.add_argument("--layer-parallel", type=int, nargs="?", const=-1, default=0, metavar="STAGES",
                   help="layer-parallel lifted training: the layers in STAGES contiguous stages "
                   "(default: one per rank), exchanging boundary states (needs per-sample states: "
                   "not isgm or --state-init forward); with --distributed the ranks form a grid of "
                   "STAGES x data replicas; launch with torchrun as --distributed")
    net = p.add_argument_group("network (MLP tasks: digits-mlp, mnist-mlp; digits-resnet: width, blocks)")
    net.add_argument("--hidden-layers", type=int, default=None, help="hidden layers of the MLP (default 2)")
    net.add_argument("--width", type=int, default=None, help="hidden width (MLP 256, ResNet 128)")
    net.add_argument("--activation", default=None,
                     help="hidden activation: relu, leaky-relu, tanh, sigmoid, soft-threshold, clip, identity")
    net.add_argument("--blocks", type=int, default=None, help="residual blocks of digits-resnet (default 8)")
    img = p.add_argument_group("network size (imaging tasks)")
    img.add_argument("--features", type=int, default=None, help="channels F of L_k")
    img.add_argument("--layers", type=int, default=None, help="unrolled layers K")
    img.add_argument("--n-train", type=int, default=None, help="training patches / images")
    img.add_argument("--val-fraction", type=float, default=None,
                     help="--data FILE.h5: fraction of the file's training samples held out for "
                     "validation (default 0.1)")
    p.set_defaults(func=run)


def _flag_names(message: str) -> str:
    """``'state_lr: …'`` → ``'--state-lr: …'`` so an error names the flag the user typed."""
    head, sep, rest = message.partition(":")
    if sep and head.isidentifier():
        return f"--{head.replace('_', '-')}:{rest}"
    return message


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ValueError as err:
        raise ValueError(_flag_names(str(err))) from None


def _run(args: argparse.Namespace) -> int:
    from ..jobs.train import (
        TaskConfig,
        TrainConfig,
        available_tasks,
        init_distributed,
        plan_training,
        run_training,
        set_threads,
    )
    from ..runtime import checked_device, show_progress

    if args.list_tasks:
        print("\n".join(available_tasks()))
        return 0
    if args.out is None and not args.dry_run:
        raise ValueError("out: an output folder is required")
    set_threads(args.threads)
    checked_device(args.device, "--device")
    is_writer = True
    if args.distributed or args.layer_parallel:
        args.device, is_writer = init_distributed(
            args.device, "layer_parallel" if args.layer_parallel else "distributed")
        if args.layer_parallel == -1:       # the flag alone: one stage per rank
            args.layer_parallel = torch.distributed.get_world_size()
    extra = {k: getattr(args, k) for k in TASK_EXTRAS if getattr(args, k) is not None}
    task_config = TaskConfig(seed=args.seed or 0, data=args.data, noise=args.noise, device=args.device,
                             dtype=DTYPES[args.dtype], extra=extra)
    fields = ("method", "solver", "epochs", "time_budget", "batch_size", "lr", "lr_schedule", "seed",
              "state_steps", "state_init", "state_order", "state_lr", "state_sweeps", "state_tol",
              "lam", "rho", "penalty_growth", "penalty_max", "tau",
              "inner_sweeps", "momentum", "power_iterations", "batched_layers", "regularizer",
              "reg_strength", "select", "checkpoint_every", "eval_every")
    config = TrainConfig(**{k: getattr(args, k) for k in fields}, distributed=args.distributed,
                         layer_parallel=args.layer_parallel)
    if args.dry_run:
        for flag in ("resume", "compare", "distributed", "layer_parallel"):
            if getattr(args, flag):
                raise ValueError(f"{flag}: does not apply to --dry-run (nothing is trained)")
        print(json.dumps(plan_training(args.task, task_config, config), indent=2))
        return 0
    try:
        result = run_training(args.task, task_config, config, args.out, resume=args.resume,
                              progress=show_progress(args.progress) and is_writer, compare=args.compare,
                              is_writer=is_writer)
    except KeyboardInterrupt:
        print(f"lifted-inverse train: interrupted; the checkpoint of the last finished epoch (if any) "
              f"is {args.out}/checkpoint.pt", file=sys.stderr)
        return 130
    finally:
        if (args.distributed or args.layer_parallel) and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if is_writer:
        metric = next(k for k in result if k.startswith("test_") and isinstance(result[k], float))
        print(f"{args.task} {result['method']}/{result['solver']}: {metric} {result[metric]:.4f} "
              f"(epoch {result['selected_epoch']} of {result['epochs']}, selected on validation), "
              f"{result['seconds_per_epoch'] * 1e3:.1f} ms/epoch -> {args.out}")
    return 0
