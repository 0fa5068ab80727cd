"""Lifted solvers vs Adam backprop on digits-mlp (64-256-256-10 ReLU): accuracy and time/epoch.

Same model, data split, batch size and number of threads for every run; epoch times exclude
evaluation. Round ``k`` trains every configuration from seed ``k`` (``--seeds`` rounds,
interleaved, which also damps the noise of a shared machine): the table gives the mean test
accuracy over seeds (± standard deviation), the median epoch time and its ratio to Adam
backprop's, and asserts that the best lifted Bregman solver reaches ``--floor`` mean test
accuracy (95% by default). Test accuracies are those of the epoch with the best validation
accuracy (the trainer's selection; the test set is never used to choose). ``bregman/bcd`` runs the task's lifted setting (digits: from the
forward pass, top-down, λ = 0.3, steps 8/L and 1.9/L); ``+engine-defaults`` the engine's
(per-sample store, bottom-up, λ = 1, steps 1/L).

    python benchmarks/bench_lifted.py --threads 1 --epochs 20 --seeds 10
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from lifted_inverse.runtime import retain_freed_memory
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train

ENGINE = {"state_init": "store", "state_order": "bottom-up", "state_lr": 1.0, "lam": 1.0, "lr": 1.0}
CONFIGS = [
    ("backprop", "adam", {}),
    ("bregman", "bcd", {}),
    ("bregman", "bcd", {"batched_layers": False}),
    ("bregman", "bcd", ENGINE),
    ("bregman", "nesterov", {}),
    ("bregman", "heavyball", {}),
    ("bregman", "adam", {}),
    ("bregman", "isgm", {}),
    ("fenchel", "bcd", {}),
    ("mac", "bcd", {}),
]


def _key(method: str, solver: str, kw: dict) -> str:
    return f"{method}/{solver}" + ("+per-layer" if kw.get("batched_layers") is False else "") + \
        ("+engine-defaults" if kw is ENGINE else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits-mlp")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3, help="rounds, round k from seed k")
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
    accs: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        for method, solver, kw in configs:
            key = _key(method, solver, kw)
            task = make_task(args.task, TaskConfig(seed=seed))
            lifted = {} if method == "backprop" else {"power_iterations": args.power_iterations}
            res = train(task, TrainConfig(method=method, solver=solver, epochs=args.epochs,
                                          batch_size=args.batch_size, seed=seed, **lifted, **kw))
            # the first epoch carries one-off costs (allocation, power-iteration start)
            times.setdefault(key, []).extend(h["epoch_seconds"] for h in res["history"][1:])
            accs.setdefault(key, []).append(res["test_accuracy"])
            print(f"  seed {seed}: {key:28s} acc {res['test_accuracy']:.4f} (epoch {res['selected_epoch']}, "
                  f"selected on validation: {res['val_accuracy']:.4f})", file=sys.stderr)
    base = statistics.median(times["backprop/adam"]) if "backprop/adam" in times else None
    print(f"\n{args.task}, {args.epochs} epochs, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.power_iterations} power iteration(s) per W-step, {args.seeds} seed(s)")
    print(f"{'method/solver':28s} {'test acc':>9s} {'sd':>6s} {'ms/epoch':>9s} {'ratio':>7s}")
    for key, a in accs.items():
        med = statistics.median(times[key])
        sd = statistics.stdev(a) if len(a) > 1 else 0.0
        ratio = f"{med / base:7.2f}" if base else "    n/a"
        print(f"{key:28s} {statistics.mean(a):9.4f} {sd:6.4f} {med * 1e3:9.1f} {ratio}")
    lifted = {k: statistics.mean(a) for k, a in accs.items() if k.startswith("bregman/")}
    if lifted:
        best_key = max(lifted, key=lifted.get)
        assert lifted[best_key] >= args.floor, (
            f"best lifted Bregman solver {best_key} reached {lifted[best_key]:.4f} < {args.floor}")
        print(f"\nbest lifted Bregman: {best_key} {lifted[best_key]:.4f} (floor {args.floor})")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    sys.exit(main())
