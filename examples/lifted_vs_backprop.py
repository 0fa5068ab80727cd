"""Reproduce the lifted-Bregman-vs-backprop comparison on the PNN denoiser (σ = 0.1) with a figure.

Trains the same PNN on the same patches by Adam backprop and by lifted Bregman (Adam on the
local weight-block gradients, states from the forward pass, the task's presets) for the same
wall-clock budget with the one trainer (:func:`lifted_inverse.training.train`), then writes
OUT/convergence.png (training objective per epoch and test PSNR against wall-clock) and
OUT/<method>/{metrics.json,checkpoint.pt,reconstructions.png}.

    python examples/lifted_vs_backprop.py --out runs/compare --budget 120
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifted_inverse.io import write_json
from lifted_inverse.runtime import retain_freed_memory, set_threads, show_progress
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train
from lifted_inverse.training.plots import plot_convergence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pnn-denoise")
    ap.add_argument("--out", default="runs/lifted_vs_backprop")
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per method")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default 1)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bars (default: when stderr is a terminal)")
    ap.add_argument("--n-train", type=int, default=256)
    args = ap.parse_args()
    set_threads(args.threads)
    retain_freed_memory()   # as the CLI and the benchmarks: large temporaries reuse freed heap memory
    out = Path(args.out)
    histories = {}
    for method in ("backprop", "bregman"):
        task = make_task(args.task, TaskConfig(extra={"n_train": args.n_train}))
        # epochs far beyond the budget: the budget ends both runs
        cfg = TrainConfig(method=method, solver="adam", epochs=10**6, time_budget=args.budget, eval_every=2)
        r = train(task, cfg, checkpoint=str(out / method / "checkpoint.pt"),
                  progress=show_progress(args.progress))
        write_json(out / method / "metrics.json", r)
        task.write_figures(task.model, f"{method}/adam", out / method)
        histories[f"{method}/adam"] = r["history"]
        print(f"{method}: test PSNR {r['test_psnr']:.2f} dB after {r['seconds']:.0f} s "
              f"({r['seconds_per_epoch']:.2f} s/epoch); {r['baseline']} {r['baseline_psnr']:.2f} dB")
    plot_convergence(histories, out / "convergence.png", metric="test_psnr")
    print(f"figure: {out / 'convergence.png'}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    main()
