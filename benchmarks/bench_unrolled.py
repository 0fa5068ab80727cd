"""Lifted Bregman vs Adam backprop on the same unrolled network and data, same wall-clock budget.

Prints, per task: test PSNR of each method after ``--budget`` seconds of training (weights selected
by validation PSNR on the task's validation images, checked after every epoch; fresh training
noise every epoch), seconds per epoch, and the classical baseline (TV or FBP) on the same
held-out test images. Every run is :func:`lifted_inverse.training.train` on the task's presets;
the options below override them.

    python benchmarks/bench_unrolled.py --task pnn-denoise --budget 60 --threads 1
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from lifted_inverse.runtime import retain_freed_memory
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train
from lifted_inverse.training.config import LIFTED_ONLY

RUNS = [("backprop", "adam"), ("bregman", "adam"), ("bregman", "isgm")]
KEYS = ("test_psnr", "test_ssim", "seconds", "epochs", "selected_epoch", "val_psnr", "seconds_per_epoch",
        "baseline", "baseline_psnr", "noisy_psnr")


def _lifted_options(pairs: list[str], ap: argparse.ArgumentParser) -> dict:
    """``KEY=VALUE`` pairs as lifted-only TrainConfig fields (numbers, true/false or a name)."""
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or key not in LIFTED_ONLY:
            ap.error(f"--lifted: expected KEY=VALUE with KEY one of {list(LIFTED_ONLY)}, got {kv!r}")
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
            continue
        try:
            number = float(value)
        except ValueError:
            out[key] = value
            continue
        out[key] = int(number) if math.isfinite(number) and number == int(number) and \
            not any(c in value for c in ".eE") else number
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pnn-denoise")
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--patch", type=int, default=40, help="training patch side (denoise / deblur)")
    ap.add_argument("--features", type=int, default=None, help="F of L_k (task default)")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="step size of every run (default per method)")
    ap.add_argument("--runs", default=",".join(f"{m}/{s}" for m, s in RUNS))
    ap.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                    help="Adam step schedule of every run over the budget")
    ap.add_argument("--lifted", nargs="*", default=[], metavar="KEY=VALUE",
                    help="lifted-only TrainConfig fields of the lifted runs, e.g. rho=3 state_steps=2")
    ap.add_argument("--seed", type=int, default=0, help="training patches, network initialisation, batch order")
    ap.add_argument("--device", default="cpu", help="train and evaluate on this device (e.g. cuda)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    lifted = _lifted_options(args.lifted, ap)
    torch.set_num_threads(args.threads)
    retain_freed_memory()   # every method alike: freed heap memory is reused (lifted_inverse.runtime)
    task_config = TaskConfig(seed=args.seed, device=args.device,
                             extra={k: v for k, v in (("n_train", args.n_train), ("patch", args.patch),
                                                      ("features", args.features), ("layers", args.layers))
                                    if v is not None})
    results = {}
    for run in args.runs.split(","):
        method, solver = run.split("/")
        task = make_task(args.task, task_config)
        # epochs far beyond the budget: the budget ends every run
        cfg = TrainConfig(method=method, solver=solver, lr=args.lr, epochs=10**6, time_budget=args.budget,
                          batch_size=args.batch_size, seed=args.seed, lr_schedule=args.lr_schedule,
                          **(lifted if method != "backprop" else {}))
        r = train(task, cfg)
        results[run] = {k: r.get(k) for k in KEYS}
        print(f"{args.task:16s} {run:16s} test PSNR {r['test_psnr']:6.2f} dB  SSIM {r['test_ssim']:.4f}  "
              f"{r['seconds_per_epoch']:6.2f} s/epoch  {r['epochs']:4d} epochs in {r['seconds']:.0f} s "
              f"(weights of epoch {r['selected_epoch']}, best on validation)  "
              f"({r['baseline']} {r['baseline_psnr']:.2f} dB)", flush=True)
    ref = results.get("backprop/adam")
    if ref:
        for run, r in results.items():
            if run != "backprop/adam":
                print(f"{run}: {r['test_psnr'] - ref['test_psnr']:+.2f} dB vs backprop at equal time, "
                      f"{r['seconds_per_epoch'] / ref['seconds_per_epoch']:.2f}x its time per epoch")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    main()
