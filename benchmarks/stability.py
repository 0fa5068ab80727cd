"""Stability experiments (issue 15, deliverable 5): where does lifted training train and backprop not?

Four experiments on the digits MLP (``digits-mlp``, validation split for the selected epoch, test
accuracy of the selected model), one sub-command each, each writing ``stability_<name>.png`` and
``stability_<name>.json`` to ``--out`` (default ``docs/figures``) and printing a markdown table:

* ``depth``: 2, 4, 8, 16 hidden layers (width ``--width``) for ReLU, tanh and sigmoid; with
  ``--task digits-resnet`` 8, 16, 32 residual blocks (width ``--width``), with ``--task
  pnn-denoise`` 10, 20, 40 PNN layers (``--features`` channels, ``--n-train`` patches; the
  score is the test PSNR of the model selected on validation, and a run "trains" when its
  validation PSNR rises by at least ``--trains-above`` dB, default 0.5, over the initial
  network's);
* ``step``: 4 hidden tanh layers, every method's step times 1/4, 1, 4, 16, 64 (its own default
  step: the task's preset; backprop SGD 0.05, Adam 1e-3; lifted BCD 4/L), up to more than 10x
  the largest step at which backprop trains;
* ``init``: 8 hidden ReLU and tanh layers, every weight matrix times 0.1, 1 or 3 at
  initialisation (the same draw for every method);
* ``nonsmooth``: 4 and 8 hidden layers of the non-smooth activations soft-threshold and clip
  (their proximal maps are the lifted penalties' activations).

Methods (``--methods``): lifted Bregman with Adam on blocks (the task's default setting) and with
BCD (its preset), backprop Adam and backprop SGD (momentum 0.9), all at their task defaults:
nothing is tuned here, on validation or test. Every method runs the same ``--epochs`` and seeds
``0..N−1`` (model initialisation and batch order: runs pair by seed). Reported per condition
and method: test accuracy mean ± sd, the fraction of seeds that train (validation accuracy
above ``--trains-above``, chance is 0.1; a run that diverges scores 0 and does not train), seconds per epoch (for equal-time reading; absolute
times are inflated by a shared machine), and for each lifted method the paired difference to
backprop Adam and to backprop SGD with its 95 % t-interval (``protocol.paired_interval``).
``--time-budget S`` gives every run S seconds of training instead (equal time; the files get
the suffix ``_equal_time``).

    nice -n 10 python benchmarks/stability.py depth --seeds 3 --epochs 5 --width 32 --threads 1
    nice -n 10 python benchmarks/stability.py nonsmooth --seeds 5 --epochs 5 --width 32 --threads 1

``--activations`` and ``--depths`` shrink a grid (the lifted state phase costs about depth²
per batch: one sweep per hidden state). The commands behind the figures of docs/results.md are
listed there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from lifted_inverse.training import TaskConfig, TrainConfig, make_task, train
from lifted_inverse.training.trainer import resolve_for

_spec = importlib.util.spec_from_file_location("protocol", Path(__file__).with_name("protocol.py"))
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)

METHODS = ("bregman/adam", "bregman/bcd", "backprop/adam", "backprop/sgd")
BASELINES = ("backprop/adam", "backprop/sgd")

#: tasks of the depth experiment: the option that sets the depth, and its default depths
DEPTH_TASKS = {"digits-mlp": ("hidden_layers", (2, 4, 8, 16)), "digits-resnet": ("blocks", (8, 16, 32)),
               "pnn-denoise": ("layers", (10, 20, 40))}


#: per experiment: the activations and depths (hidden layers) it runs by default
DEFAULTS = {"depth": (("relu", "tanh", "sigmoid"), (2, 4, 8, 16)), "step": (("tanh",), (4,)),
            "init": (("relu", "tanh"), (8,)), "nonsmooth": (("soft_threshold", "clip"), (4, 8))}


#: the step factors and initial-weight scales of ``step`` and ``init``
FACTORS = {"step": (0.25, 1.0, 4.0, 16.0, 64.0), "init": (0.1, 1.0, 3.0)}


def conditions(name: str, width: int, activations=None, depths=None, values=None,
               task: str = "digits-mlp", features: int = 8, n_train: int = 32) -> list[dict]:
    """The conditions of experiment ``name``: ``label``, ``task`` and its ``extra`` options,
    ``lr_factor`` (times each method's default step) and ``init_scale`` (times every initial
    weight matrix)."""
    if name not in DEFAULTS:
        raise ValueError(f"experiment: unknown {name!r}")
    if task not in DEPTH_TASKS or (task != "digits-mlp" and name != "depth"):
        raise ValueError(f"task: {name} runs on {['digits-mlp'] if name != 'depth' else list(DEPTH_TASKS)}, "
                         f"not {task!r}")
    if task != "digits-mlp":
        key, default_depths = DEPTH_TASKS[task]
        fixed = {"width": width} if task == "digits-resnet" else {"features": features, "n_train": n_train}
        return [{"label": f"{task} x{d}", "group": task, "x": d, "task": task, "extra": {key: d, **fixed}}
                for d in tuple(depths or default_depths)]
    acts = tuple(activations or DEFAULTS[name][0])
    ds = tuple(depths or DEFAULTS[name][1])
    xs = tuple(values or FACTORS.get(name, ()))

    def mlp(depth, act):
        return {"hidden_layers": depth, "width": width, "activation": act}
    if name in ("depth", "nonsmooth"):
        return [{"label": f"{act} x{d}", "group": act, "x": d, "extra": mlp(d, act)}
                for act in acts for d in ds]
    if name == "step":
        return [{"label": f"{act} x{d} lr x{f:g}", "group": f"{act} x{d}", "x": f, "extra": mlp(d, act),
                 "lr_factor": f} for act in acts for d in ds for f in xs]
    return [{"label": f"{act} x{d} init x{s:g}", "group": f"{act} x{d}", "x": s, "extra": mlp(d, act),
             "init_scale": s} for act in acts for d in ds for s in xs]


def _scores(task, res: dict) -> tuple[float, float]:
    """(validation, test) score of a run: accuracy, or PSNR (dB) for an imaging task."""
    if "val_psnr" in res:
        return res["val_psnr"], res["test_psnr"]
    return res["val_accuracy"], res["test_accuracy"]


def run_one(method: str, cond: dict, seed: int, epochs: int, time_budget: float | None = None,
            trains_above: float = 0.5) -> dict:
    """One training run of ``method`` under ``cond`` from seed ``seed`` (``epochs``, or
    ``time_budget`` seconds of training with ``epochs`` as the cap). ``trains``: validation
    accuracy above ``trains_above``, or for an imaging task validation PSNR at least
    ``trains_above`` dB above the initial network's."""
    name, solver = protocol.split_method(method)
    task = make_task(cond.get("task", "digits-mlp"), TaskConfig(seed=seed, extra=dict(cond["extra"])))
    scale = cond.get("init_scale", 1.0)
    if scale != 1.0:
        with torch.no_grad():
            for p in task.model.parameters():
                if p.ndim >= 2:
                    p.mul_(scale)
    imaging = getattr(task, "kind", None) != "classification"
    start = task.evaluate(task.model, "val")["val_psnr"] if imaging else None
    base = resolve_for(task, TrainConfig(method=name, solver=solver)).lr
    lr = base * cond.get("lr_factor", 1.0)
    t0 = time.perf_counter()
    try:
        res = train(task, TrainConfig(method=name, solver=solver, epochs=epochs, seed=seed, lr=lr,
                                      time_budget=time_budget))
    except FloatingPointError as err:       # diverged: scored as chance-free zero, not dropped
        return {"method": method, "seed": seed, "lr": lr, "val": math.nan, "test": math.nan,
                "seconds_per_epoch": math.nan, "epochs": 0, "wall": time.perf_counter() - t0,
                "layer_change_ratio": math.nan, "diverged": str(err), "trains": False, "val_start": start}
    change = res["layer_change"]
    ok = all(math.isfinite(v) for v in change) and max(change) > 0
    val, test = _scores(task, res)
    trains = _finite(val) and (val - start >= trains_above if imaging else val > trains_above)
    return {"method": method, "seed": seed, "lr": lr, "val": val, "test": test, "val_start": start,
            "trains": bool(trains), "seconds_per_epoch": res["seconds_per_epoch"],
            "epochs": len(res["history"]),
            "wall": time.perf_counter() - t0,
            "layer_change_ratio": (min(change) / max(change)) if ok else math.nan}


def _finite(v):
    return v is not None and math.isfinite(v)


def _median(values) -> float:
    vals = [v for v in values if _finite(v)]
    return statistics.median(vals) if vals else math.nan


def summarise(runs: list[dict], methods) -> dict:
    """Per method: test mean ± sd, fraction of seeds that train, s/epoch; paired interval of
    each lifted method against the baseline."""
    out = {}
    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
    for m, rs in by.items():
        tests = [r["test"] if _finite(r["test"]) else 0.0 for r in rs]
        out[m] = {"test_mean": statistics.fmean(tests), "test_sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                  "trains": sum(bool(r.get("trains")) for r in rs) / len(rs),
                  "seconds_per_epoch": _median(r["seconds_per_epoch"] for r in rs),
                  "layer_change_ratio": _median(r["layer_change_ratio"] for r in rs),
                  "diverged": sum("diverged" in r for r in rs)}
    for b in BASELINES:
        if b not in by:
            continue
        base = [r["test"] if _finite(r["test"]) else 0.0 for r in by[b]]
        for m, rs in by.items():
            if not m.startswith("backprop") and len(rs) >= 2:
                mine = [r["test"] if _finite(r["test"]) else 0.0 for r in rs]
                out[m].setdefault("paired", {})[b] = protocol.paired_interval(mine, base)
    return out


def _imaging(conds) -> bool:
    return any(c.get("task", "digits-mlp") not in ("digits-mlp", "digits-resnet") for c in conds)


def markdown(name: str, conds, summary, methods) -> str:
    k, d = (1, 2) if _imaging(conds) else (100, 1)            # PSNR in dB, or accuracy in %
    lines = ["| condition | " + " | ".join(methods) + " | lifted − backprop (paired, 95 % CI) |",
             "|---|" + "---|" * (len(methods) + 1)]
    for c in conds:
        s = summary[c["label"]]
        cells = [f"{k * s[m]['test_mean']:.{d}f} ± {k * s[m]['test_sd']:.{d}f} "
                 f"({100 * s[m]['trains']:.0f} % train, {s[m]['seconds_per_epoch']:.2f} s/ep)" for m in methods]
        paired = "; ".join(f"{m.split('/')[1]} − {b.split('/')[1]}: {k * p['mean']:+.2f} "
                           f"[{k * p['low']:+.2f}, {k * p['high']:+.2f}]"
                           for m in methods for b, p in s[m].get("paired", {}).items())
        lines.append(f"| {c['label']} | " + " | ".join(cells) + f" | {paired} |")
    return "\n".join(lines)


def figure(name: str, conds, summary, methods, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imaging = _imaging(conds)
    k = 1 if imaging else 100
    groups = list(dict.fromkeys(c["group"] for c in conds))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        cs = [c for c in conds if c["group"] == g]
        xs = [c["x"] for c in cs]
        for m in methods:
            ys = [k * summary[c["label"]][m]["test_mean"] for c in cs]
            es = [k * summary[c["label"]][m]["test_sd"] for c in cs]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
        ax.set_xscale("log", base=2 if name in ("depth", "nonsmooth") else 10)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        task = cs[0].get("task", "digits-mlp")
        ax.set_xlabel({"depth": {"digits-mlp": "hidden layers", "digits-resnet": "residual blocks",
                                 "pnn-denoise": "PNN layers"}[task], "nonsmooth": "hidden layers",
                       "step": "step × default", "init": "initial weights ×"}[name])
        if imaging:
            ax.set_ylabel("test PSNR (dB)")
        else:
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(0, 100)
            ax.axhline(10, color="grey", lw=0.8, ls=":")
        ax.set_title(g if task != "digits-mlp" else f"digits-mlp, {g}")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("depth", "step", "init", "nonsmooth"))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="epochs (with --time-budget: the cap)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training per run, every method (equal time; shared-machine noise)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--activations", nargs="+", default=None, help="override the experiment's activations")
    p.add_argument("--depths", nargs="+", type=int, default=None, help="override its depths (hidden layers)")
    p.add_argument("--values", nargs="+", type=float, default=None,
                   help="step: the step factors; init: the weight scales (override the defaults)")
    p.add_argument("--task", default="digits-mlp", choices=list(DEPTH_TASKS),
                   help="depth only: the network family swept (default digits-mlp)")
    p.add_argument("--features", type=int, default=8, help="pnn-denoise: channels of every layer")
    p.add_argument("--n-train", type=int, default=32, help="pnn-denoise: training patches")
    p.add_argument("--trains-above", type=float, default=None,
                   help="validation accuracy that counts as training (default 0.5), or for "
                        "pnn-denoise the validation PSNR gain over the initial network in dB (default 0.5)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--name", default=None, help="file stem of the figure and JSON (default "
                   "stability_<experiment>[_equal_time])")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    conds = conditions(args.experiment, args.width, args.activations, args.depths, args.values,
                       args.task, args.features, args.n_train)
    if args.trains_above is None:
        args.trains_above = 0.5
    runs, summary = {}, {}
    for c in conds:
        rs = []
        for seed in range(args.seeds):
            for m in args.methods:      # methods alternate within a seed (shared-machine timing)
                r = run_one(m, c, seed, args.epochs, args.time_budget, args.trains_above)
                rs.append(r)
                print(f"{c['label']:>22} {m:>14} seed {seed}: val {r['val']:.3f} test {r['test']:.3f} "
                      f"{r['seconds_per_epoch']:.2f} s/ep", file=sys.stderr, flush=True)
        runs[c["label"]] = rs
        summary[c["label"]] = summarise(rs, args.methods)
    family = {"digits-mlp": "", "digits-resnet": "_resnet", "pnn-denoise": "_pnn"}[args.task]
    stem = args.name or (f"stability_{args.experiment}{family}" + ("_equal_time" if args.time_budget else ""))
    figure(args.experiment, conds, summary, args.methods, out / f"{stem}.png")
    with open(out / f"{stem}.json", "w") as f:
        json.dump({"experiment": args.experiment, "args": vars(args), "conditions": conds,
                   "runs": runs, "summary": summary}, f, indent=1, default=str)
    print(markdown(args.experiment, conds, summary, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
