"""Lifted Bregman vs Adam backprop on the same unrolled network and data, same wall-clock budget.

Prints, per task: test PSNR of each method after ``--budget`` seconds of training (weights selected
by validation PSNR on the task's validation images, checked every 20 s of training time; fresh
training noise every epoch), seconds per epoch, and the classical baseline (TV or FBP) on the same
held-out test images.

    python benchmarks/bench_unrolled.py --task pnn-denoise --budget 60 --threads 1
"""
from __future__ import annotations

import argparse
import json

import torch

from lifted_inverse.runtime import retain_freed_memory
from lifted_inverse.training.imaging import ImagingTrainConfig, make_imaging_task, train_imaging

RUNS = [("backprop", "adam"), ("bregman", "adam"), ("bregman", "isgm")]


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
                    help="LiftedConfig fields of the lifted runs, e.g. loss_weight=0.1 inner_sweeps=2")
    ap.add_argument("--seed", type=int, default=0, help="training patches, network initialisation, batch order")
    ap.add_argument("--device", default="cpu", help="train and evaluate on this device (e.g. cuda)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()   # every method alike: freed heap memory is reused (lifted_inverse.runtime)
    results = {}
    for run in args.runs.split(","):
        method, solver = run.split("/")
        task = make_imaging_task(args.task, n_train=args.n_train, patch=args.patch, features=args.features,
                                 layers=args.layers, device=args.device, seed=args.seed)
        lifted = {k: float(v) if "." in v or "e" in v else int(v)
                  for k, v in (kv.split("=", 1) for kv in args.lifted)} if method != "backprop" else {}
        cfg = ImagingTrainConfig(method=method, solver=solver, lr=args.lr, epochs=10**6, batch_size=args.batch_size, seed=args.seed,
                                 time_budget=args.budget, eval_every=10**6, lifted=lifted,
                                 lr_schedule=args.lr_schedule)
        r = train_imaging(task, cfg)
        results[run] = {k: r[k] for k in ("test_psnr", "test_ssim", "seconds", "epochs", "selected_epoch",
                                          "val_psnr", "seconds_per_epoch", "baseline", "baseline_psnr",
                                          "noisy_psnr")}
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
    main()
