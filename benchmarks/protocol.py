"""One comparison protocol for every task: tune on validation, then test on fresh seeds.

1. **Search.** Each method (``method/solver``, e.g. ``backprop/adam``, ``bregman/bcd``) has a
   search space (:data:`SEARCH_SPACES`): a grid of options. The learning rate is searched as a
   factor of the task's own step for that method (``lr = factor · lr_task``, ``lr_task`` the value
   :func:`~lifted_inverse.training.trainer.resolve_for` gives), so one space serves digits and
   imaging tasks; the other options are absolute values. Every method gets exactly ``budget``
   configurations, a seeded random subset (without replacement) of its grid
   (:func:`configurations`); the same budget for lifted and backprop.
2. **Selection.** Each configuration is trained once per tuning seed (``100, 101, ...``, disjoint
   from the test seeds) and scored by its validation metric (``val_accuracy`` for digits,
   ``val_psnr`` for imaging; the trainer itself picks the epoch by validation). The configuration
   with the best mean validation metric wins; ties go to the earlier one in the sampled order.
   The test metric of tuning runs is never read (:func:`tune`).
3. **Test.** The chosen configuration of each method is trained on the fresh seeds ``0..N−1``
   (seed ``s``: model initialisation ``TaskConfig(seed=s)`` and batch order
   ``TrainConfig(seed=s)``, the same for every method, so runs pair by seed). Reported: test
   mean ± sd (sample sd, ``ddof = 1``) per method, and for every other method against the
   baseline (the first, by default backprop) the per-seed difference ``d_s = m_s − b_s`` with its
   95 % t-interval ``d̄ ± t_{0.975, N−1} · s_d / √N`` (:func:`paired_interval`); an interval that
   contains 0 reads "no difference".

Training length is ``--epochs`` (validation-selected epoch) or, with ``--time-budget S``, S
seconds of training per run for every method (equal time; the epoch cap is then ``--epochs`` if
given, else unbounded).

    python benchmarks/protocol.py --task digits-mlp --budget 4 --seeds 5 --epochs 20 --threads 1
    python benchmarks/protocol.py --task pnn-denoise --extra n_train=64 --extra layers=4 \\
        --budget 2 --seeds 3 --time-budget 30 --json pnn.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys

import torch
from scipy import stats

from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train
from lifted_inverse.training.trainer import resolve_for

#: per method (``'method/solver'``, or ``'method/*'`` for every solver of the method, or
#: ``'lifted/*'`` for every lifted method): option -> grid values. ``lr_factor`` multiplies the
#: task's step for that method.
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "backprop/*": {"lr_factor": (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0)},
    "bregman/bcd": {"lr_factor": (1 / 4, 1 / 2, 1.0, 2.0), "lam": (0.1, 0.3, 1.0),
                    "state_lr": (1.0, 1.9)},
    "lifted/*": {"lr_factor": (1 / 4, 1 / 2, 1.0, 2.0, 4.0), "lam": (0.3, 1.0, 3.0)},
}
DEFAULT_METHODS = ("backprop/adam", "bregman/bcd")
TUNING_SEED0 = 100


def split_method(method: str) -> tuple[str, str]:
    """``'bregman/bcd'`` -> ``('bregman', 'bcd')``."""
    name, sep, solver = method.partition("/")
    if not sep or not name or not solver:
        raise ValueError(f"method: expected 'method/solver' (e.g. 'backprop/adam'), got {method!r}")
    return name, solver


def search_space(method: str) -> dict[str, tuple]:
    """The grid of ``method``: its exact entry, else ``'<method>/*'``, else ``'lifted/*'``."""
    name, _ = split_method(method)
    for key in (method, f"{name}/*", None if name == "backprop" else "lifted/*"):
        if key in SEARCH_SPACES:
            return SEARCH_SPACES[key]
    raise ValueError(f"method: no search space for {method!r}; known: {sorted(SEARCH_SPACES)}")


def configurations(space: dict[str, tuple], budget: int, seed: int) -> list[dict]:
    """``budget`` distinct points of the grid ``space`` (``option -> values``), drawn uniformly
    without replacement by ``random.Random(seed)``, in draw order."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget: must be a positive integer, got {budget!r}")
    keys = sorted(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if budget > len(grid):
        raise ValueError(f"budget: {budget} configurations asked, the search space has {len(grid)}")
    return random.Random(seed).sample(grid, budget)


def train_config(task, method: str, point: dict, seed: int, epochs: int | None,
                 time_budget: float | None) -> TrainConfig:
    """The :class:`TrainConfig` of one search point: ``lr_factor`` becomes ``lr`` relative to the
    task's resolved step for ``method``, the other options pass through."""
    name, solver = split_method(method)
    options = dict(point)
    factor = options.pop("lr_factor", 1.0)
    base_lr = resolve_for(task, TrainConfig(method=name, solver=solver)).lr
    if time_budget is not None and epochs is None:
        epochs = 10 ** 9   # the time budget ends training
    return TrainConfig(method=name, solver=solver, epochs=epochs, time_budget=time_budget,
                       lr=base_lr * factor, seed=seed, **options)


def run_once(task_name: str, method: str, point: dict, seed: int, *, epochs=None, time_budget=None,
             extra: dict | None = None) -> dict:
    """Train a fresh model of ``task_name`` (initialised by ``seed``) with one search point;
    returns the trainer's result plus ``lr``."""
    task = make_task(task_name, TaskConfig(seed=seed, extra=dict(extra or {})))
    cfg = train_config(task, method, point, seed, epochs, time_budget)
    result = train(task, cfg)
    result["lr"] = cfg.lr
    result["metric"] = task.metric
    return result


def tune(task_name: str, method: str, budget: int, *, tuning_seeds: int = 2, search_seed: int = 0,
         epochs=None, time_budget=None, extra=None) -> dict:
    """Evaluate ``budget`` configurations of ``method`` on validation; returns
    ``{"trials": [{"point", "val": [per tuning seed], "val_mean"}], "best": point}``.

    Only ``val_<metric>`` of the tuning runs is read; their test metric is dropped here."""
    points = configurations(search_space(method), budget, search_seed)
    trials = []
    for point in points:
        vals = []
        for i in range(tuning_seeds):
            r = run_once(task_name, method, point, TUNING_SEED0 + i, epochs=epochs,
                         time_budget=time_budget, extra=extra)
            v = r[f"val_{r['metric']}"]
            vals.append(-math.inf if v is None or not math.isfinite(v) else float(v))
        trials.append({"point": point, "val": vals, "val_mean": statistics.fmean(vals)})
    best = max(range(len(trials)), key=lambda i: (trials[i]["val_mean"], -i))
    return {"trials": trials, "best": trials[best]["point"]}


def paired_interval(a, b, level: float = 0.95) -> dict:
    """Paired difference ``d_s = a_s − b_s`` over ``n ≥ 2`` seeds: mean ``d̄``, sample sd ``s_d``
    and the t-interval ``d̄ ± t_{(1+level)/2, n−1} · s_d / √n``; ``differs`` is False when the
    interval contains 0."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_interval: need two equal-length samples of size >= 2, got {len(a)}, {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    return {"diffs": d, "mean": mean, "sd": sd, "low": lo, "high": hi, "level": level,
            "differs": not (lo <= 0.0 <= hi)}


def run_protocol(task_name: str, methods=DEFAULT_METHODS, *, budget: int = 4, seeds: int = 5,
                 tuning_seeds: int = 2, search_seed: int = 0, epochs=None, time_budget=None,
                 extra=None) -> dict:
    """Tune every method on validation (:func:`tune`), then train its choice on seeds
    ``0..seeds−1`` and compare each method with ``methods[0]`` (:func:`paired_interval`)."""
    if seeds < 2:
        raise ValueError(f"seeds: the paired interval needs at least 2 test seeds, got {seeds}")
    if seeds > TUNING_SEED0:
        raise ValueError(f"seeds: at most {TUNING_SEED0}, the tuning seeds start there")
    out = {"task": task_name, "budget": budget, "seeds": list(range(seeds)),
           "tuning_seeds": [TUNING_SEED0 + i for i in range(tuning_seeds)], "search_seed": search_seed,
           "epochs": epochs, "time_budget": time_budget, "extra": dict(extra or {}), "methods": {}}
    for method in methods:
        tuned = tune(task_name, method, budget, tuning_seeds=tuning_seeds, search_seed=search_seed,
                     epochs=epochs, time_budget=time_budget, extra=extra)
        runs = [run_once(task_name, method, tuned["best"], s, epochs=epochs, time_budget=time_budget,
                         extra=extra) for s in range(seeds)]
        metric = runs[0]["metric"]
        test = [r[f"test_{metric}"] for r in runs]
        out["metric"] = metric
        out["methods"][method] = {
            "search": tuned["trials"], "chosen": tuned["best"], "lr": runs[0]["lr"],
            "val_mean": max(t["val_mean"] for t in tuned["trials"]),
            "test": test, "test_mean": statistics.fmean(test), "test_sd": statistics.stdev(test),
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in runs),
            "selected_epoch": [r.get("selected_epoch") for r in runs]}
    base = methods[0]
    out["baseline"] = base
    out["paired"] = {m: paired_interval(out["methods"][m]["test"], out["methods"][base]["test"])
                     for m in methods[1:]}
    return out


def _fmt(v: float, metric: str) -> str:
    return f"{100 * v:.2f}" if metric == "accuracy" else f"{v:.2f}"


def markdown(result: dict) -> str:
    """The tables of ``result`` (:func:`run_protocol`) in the format of docs/results.md."""
    metric = result["metric"]
    unit = "%" if metric == "accuracy" else "dB"
    n = len(result["seeds"])
    length = (f"{result['time_budget']:g} s per run" if result["time_budget"] is not None
              else f"{result['epochs']} epochs")
    header = (f"| method | chosen on validation ({result['budget']} configurations, "
              f"{len(result['tuning_seeds'])} tuning seeds) | val {metric} ({unit}), mean over tuning seeds | "
              f"test {metric} ({unit}), mean ± sd, {n} seeds | s/epoch (median) |")
    lines = [header, "|---|---|---|---|---|"]
    for m, r in result["methods"].items():
        chosen = ", ".join(f"{k} {v:g}" for k, v in sorted(r["chosen"].items()) if k != "lr_factor")
        chosen = f"lr {r['lr']:.3g}" + (f", {chosen}" if chosen else "")
        lines.append(f"| `{m}` | {chosen} | {_fmt(r['val_mean'], metric)} | "
                     f"**{_fmt(r['test_mean'], metric)} ± {_fmt(r['test_sd'], metric)}** | "
                     f"{r['seconds_per_epoch']:.3g} |")
    header = (f"| paired difference ({length}) | per seed ({unit}) | mean ({unit}) | "
              f"95 % t-interval ({unit}) | verdict |")
    lines += ["", header, "|---|---|---|---|---|"]
    for m, p in result["paired"].items():
        per = ", ".join(_fmt(d, metric) for d in p["diffs"])
        winner = m if p["mean"] > 0 else result["baseline"]
        verdict = f"`{winner}` better" if p["differs"] else "no difference"
        lines.append(f"| `{m}` − `{result['baseline']}` | {per} | {_fmt(p['mean'], metric)} | "
                     f"[{_fmt(p['low'], metric)}, {_fmt(p['high'], metric)}] | {verdict} |")
    return "\n".join(lines)


def _parse_extra(items) -> dict:
    extra = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--extra: expected key=value, got {item!r}")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    return extra


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="digits-mlp")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help="method/solver, the first is the baseline of the paired differences")
    p.add_argument("--budget", type=int, default=4, help="configurations per method")
    p.add_argument("--seeds", type=int, default=5, help="test seeds 0..N-1")
    p.add_argument("--tuning-seeds", type=int, default=2, help=f"seeds {TUNING_SEED0}.. per configuration")
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training per run")
    p.add_argument("--extra", action="append", help="task option key=value (repeatable)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the full result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.epochs if args.epochs is not None or args.time_budget is not None else 20
    result = run_protocol(args.task, tuple(args.methods), budget=args.budget, seeds=args.seeds,
                          tuning_seeds=args.tuning_seeds, search_seed=args.search_seed, epochs=epochs,
                          time_budget=args.time_budget, extra=_parse_extra(args.extra))
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    sys.exit(main())
