"""Lifted solvers vs Adam backprop on digits-mlp (64-256-256-10 ReLU): accuracy and time/epoch.

Same model (same seed), same data split, same batch size and same number of threads for every
run; epoch times exclude evaluation. Runs are interleaved over ``--repeats`` rounds and the median
epoch time is reported, which damps the noise of a shared machine. Prints a table with the ratio
of each solver's time per epoch to Adam backprop's, and asserts that the best lifted Bregman
solver reaches ``--floor`` test accuracy (95% by default).

    python benchmarks/bench_lifted.py --threads 1 --epochs 20
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from lifted_inverse.runtime import retain_freed_memory
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train

CONFIGS = [
    ("backprop", "adam", {}),
    ("bregman", "bcd", {}),
    ("bregman", "bcd", {"batched_layers": False}),
    ("bregman", "nesterov", {}),
    ("bregman", "heavyball", {}),
    ("bregman", "adam", {}),
    ("bregman", "isgm", {}),
    ("fenchel", "bcd", {}),
    ("mac", "bcd", {}),
]


def _key(method: str, solver: str, kw: dict) -> str:
    return f"{method}/{solver}" + ("+per-layer" if kw.get("batched_layers") is False else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits-mlp")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--floor", type=float, default=0.95)
    p.add_argument("--power-iterations", type=int, default=1,
                   help="warm-started power iterations per W-step of the lifted solvers (default 1; "
                   "the library default is 3)")
    p.add_argument("--only", nargs="*", default=None, help="subset, e.g. bregman/adam backprop/adam bregman/bcd+per-layer")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()   # every method alike: freed heap memory is reused (lifted_inverse.runtime)
    configs = [c for c in CONFIGS if args.only is None or _key(*c) in args.only]
    times: dict[str, list[float]] = {}
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        for method, solver, kw in configs:
            key = _key(method, solver, kw)
            task = make_task(args.task, TaskConfig(seed=0))
            res = train(task, TrainConfig(method=method, solver=solver, epochs=args.epochs,
                                          batch_size=args.batch_size, seed=0,
                                          power_iterations=args.power_iterations, **kw))
            # the first epoch carries one-off costs (allocation, power-iteration start)
            times.setdefault(key, []).extend(h["epoch_seconds"] for h in res["history"][1:])
            results[key] = res
            print(f"  round {rep + 1}: {key:20s} acc {res['test_accuracy']:.4f}", file=sys.stderr)
    base = statistics.median(times["backprop/adam"]) if "backprop/adam" in times else None
    print(f"\n{args.task}, {args.epochs} epochs, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.power_iterations} power iteration(s) per W-step")
    print(f"{'method/solver':20s} {'test acc':>9s} {'best acc':>9s} {'ms/epoch':>9s} {'ratio':>7s}")
    for key, res in results.items():
        med = statistics.median(times[key])
        best = max(h["test_accuracy"] for h in res["history"])
        ratio = f"{med / base:7.2f}" if base else "    n/a"
        print(f"{key:20s} {res['test_accuracy']:9.4f} {best:9.4f} {med * 1e3:9.1f} {ratio}")
    lifted = {k: r["test_accuracy"] for k, r in results.items() if k.startswith("bregman/")}
    if lifted:
        best_key = max(lifted, key=lifted.get)
        assert lifted[best_key] >= args.floor, (
            f"best lifted Bregman solver {best_key} reached {lifted[best_key]:.4f} < {args.floor}")
        print(f"\nbest lifted Bregman: {best_key} {lifted[best_key]:.4f} (floor {args.floor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
