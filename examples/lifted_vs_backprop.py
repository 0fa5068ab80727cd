"""Reproduce the lifted-Bregman-vs-backprop comparison on the PNN denoiser (σ = 0.1) with a figure.

Trains the same PNN on the same patches by Adam backprop and by lifted Bregman (Adam on the
local weight-block gradients, ISGM-style warm-started states) for the same wall-clock budget,
then writes OUT/psnr_vs_time.png (test PSNR vs wall-clock, with the TV baseline) and
OUT/<method>/{metrics.json,checkpoint.pt,reconstructions.png}.

    python examples/lifted_vs_backprop.py --out runs/compare --budget 120
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lifted_inverse.runtime import retain_freed_memory
from lifted_inverse.training.imaging import (
    ImagingTrainConfig,
    make_imaging_task,
    plot_psnr_vs_time,
    train_imaging,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pnn-denoise")
    ap.add_argument("--out", default="runs/lifted_vs_backprop")
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()   # as the CLI and the benchmarks: large temporaries reuse freed heap memory
    out = Path(args.out)
    histories, baseline = {}, None
    for method in ("backprop", "bregman"):
        task = make_imaging_task(args.task, n_train=args.n_train)
        cfg = ImagingTrainConfig(method=method, solver="adam", epochs=10**6, time_budget=args.budget,
                                 eval_every=2, batch_size=task.defaults["batch_size"])
        r = train_imaging(task, cfg, out / method)
        histories[f"{method}/adam"] = r["history"]
        baseline = (r["baseline_psnr"], r["baseline"])
        print(f"{method}: test PSNR {r['test_psnr']:.2f} dB after {r['seconds']:.0f} s "
              f"({r['seconds_per_epoch']:.2f} s/epoch); {r['baseline']} {r['baseline_psnr']:.2f} dB")
    plot_psnr_vs_time(histories, out / "psnr_vs_time.png", *baseline)
    print(f"figure: {out / 'psnr_vs_time.png'}")


if __name__ == "__main__":
    main()
