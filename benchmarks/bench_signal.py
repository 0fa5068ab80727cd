"""Per layer: the lifted W-update of one training step against the backprop gradient.

For each task (default: an 8-hidden-layer digits MLP, digits-resnet, a small 20-layer PNN) and
its default lifted setting (``--method/--solver/--set key=value`` override it), on the
mini-batches the trainer would visit first (seeded as in :class:`~lifted_inverse.training.trainer.Trainer`),
for every weight layer ``W`` (:func:`~lifted_inverse.training.trainer.weight_layers`):

* ``ΔW = W_after − W_before`` of ONE lifted step (:func:`~lifted_inverse.training.trainer.make_step`,
  exactly the step training runs), its Frobenius norm and ``‖ΔW‖/‖W‖``;
* ``G = ∇_W task.backprop_loss`` (autograd) at ``W_before`` on the same batch, and
  ``cos(ΔW, −G) = ⟨ΔW, −G⟩ / (‖ΔW‖ ‖G‖)`` (1: the lifted step moves along backprop's steepest
  descent; 0: orthogonal to it; NaN: a zero vector);
* ``moved``: in how many of the steps ``ΔW ≠ 0``;
* ``G_lift``, the lifted W-block gradient ``(1/|S|) Σ_i (∂z_l/∂θ)ᵀ ∇_z P_l`` the solver computed
  on that step (before Adam's or any other preconditioning), with ``‖G_lift‖/‖G‖`` and
  ``cos(G_lift, G)``. The library does not expose it, so this script wraps the solver's
  ``_gradients`` method on its own step object and keeps its first call per step (ISGM's first
  inner sweep). The step is built with ``batched_layers=False``: the layer-parallel kernels fuse
  the BCD W-step and never form ``G_lift``; their arithmetic is the per-layer path's
  (``tests/test_batched_layers.py``).

``--batches K`` consecutive steps (the trajectory training takes: the solver's state, e.g. Adam's
moments, carries over) give mean ± sd of the cosines; the first batch is the single-step figure.
The model's parameters and buffers are restored afterwards.

    python benchmarks/bench_signal.py --threads 1 --batches 5 --json signal.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import fields

import torch

from lifted_inverse.training import TaskConfig, TrainConfig, make_task
from lifted_inverse.training.trainer import make_step, resolve_for, weight_layers

DEFAULT_TASKS = ("digits-mlp", "digits-resnet", "pnn-denoise")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """``⟨a, b⟩ / (‖a‖ ‖b‖)`` over all entries (float64); NaN when either is zero."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(a @ b) / (na * nb)


def backprop_gradients(task, inputs: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
    """``∇_W task.backprop_loss(model, inputs, targets)`` for every weight layer (autograd at the
    current weights; ``.grad`` fields are left untouched)."""
    weights = weight_layers(task.model)
    with torch.enable_grad():
        loss = task.backprop_loss(task.model, inputs, targets)
        return [g.detach() for g in torch.autograd.grad(loss, weights)]


class LiftedGradientProbe:
    """Records the lifted W-block gradients of a :class:`~lifted_inverse.training.steps.LiftedStep`
    per weight layer of the model (layers that share a tensor: their gradients summed), first
    solver call after :meth:`arm` only."""

    def __init__(self, step, model):
        self.solver = step.solver
        self.index = {id(w): i for i, w in enumerate(weight_layers(model))}
        self.n = len(self.index)
        self.grads: list[torch.Tensor | None] | None = None
        self._armed = False
        inner = self.solver._gradients

        def recording(*args, **kwargs):
            out = inner(*args, **kwargs)
            if self._armed:
                self._record(out[0])
                self._armed = False
            return out
        self.solver._gradients = recording

    def arm(self) -> None:
        self.grads, self._armed = None, True

    def _record(self, grads: list[list[torch.Tensor]]) -> None:
        acc: list[torch.Tensor | None] = [None] * self.n
        for ps, gs in zip(self.solver.params, grads):
            for p, g in zip(ps, gs):
                i = self.index.get(id(p))
                if i is not None:
                    acc[i] = g.detach().clone() if acc[i] is None else acc[i] + g.detach()
        self.grads = acc


def trainer_batches(task, config: TrainConfig, count: int) -> list[torch.Tensor | None]:
    """The first ``count`` mini-batches (sample ids) of the trainer's first epoch for ``config``
    (its seeded permutation, cycled when the epoch has fewer batches; ``None``, the whole set,
    for full-batch training)."""
    n = task.n_train
    bs = n if not config.batch_size else min(int(config.batch_size), n)
    if bs >= n:
        return [None] * count
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed)).to(task.device)
    batches = [perm[s:s + bs] for s in range(0, n, bs)]
    return [batches[i % len(batches)] for i in range(count)]


def step_signal(task, step, ids, probe: LiftedGradientProbe | None = None) -> list[dict]:
    """One lifted step on batch ``ids`` (the model is updated in place); per weight layer:
    ``weight_norm`` ‖W‖, ``update_norm`` ‖ΔW‖, ``relative_update`` ‖ΔW‖/‖W‖, ``grad_norm`` ‖G‖,
    ``cos_update`` cos(ΔW, −G), and with a probe ``lifted_grad_norm`` ‖G_lift‖ and
    ``cos_lifted_grad`` cos(G_lift, G)."""
    inputs, targets = task.train_batch(ids)
    weights = weight_layers(task.model)
    before = [w.detach().clone() for w in weights]
    grads = backprop_gradients(task, inputs, targets)
    if probe is not None:
        probe.arm()
    step(ids)
    rows = []
    for i, (w, w0, g) in enumerate(zip(weights, before, grads)):
        delta = w.detach() - w0
        wn, dn = float(torch.linalg.vector_norm(w0)), float(torch.linalg.vector_norm(delta))
        row = {"layer": i, "shape": list(w.shape), "weight_norm": wn, "update_norm": dn,
               "relative_update": dn / wn if wn > 0 else math.nan,
               "grad_norm": float(torch.linalg.vector_norm(g)), "cos_update": cosine(delta, -g)}
        gl = None if probe is None or probe.grads is None else probe.grads[i]
        if gl is not None:
            row["lifted_grad_norm"] = float(torch.linalg.vector_norm(gl))
            row["cos_lifted_grad"] = cosine(gl, g)
        rows.append(row)
    return rows


def _mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def signal(task, config: TrainConfig, batches: int = 5) -> dict:
    """``batches`` consecutive lifted steps of ``config`` (resolved over the task's presets) on
    ``task``; returns ``{"config", "steps": [per-step rows], "summary": [per-layer aggregates]}``
    and leaves the model's parameters and buffers as they were."""
    config = resolve_for(task, config)
    if not config.lifted:
        raise ValueError("method: bench_signal compares a lifted step with backprop; give a lifted method")
    saved = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
    flushed = torch.set_flush_denormal(True)       # as the trainer runs
    try:
        torch.manual_seed(config.seed)
        step = make_step(task, config)
        step.set_epoch(0)
        probe = LiftedGradientProbe(step, task.model)
        steps = [step_signal(task, step, ids, probe) for ids in trainer_batches(task, config, batches)]
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        task.model.load_state_dict(saved)
    summary = []
    for i, first in enumerate(steps[0]):
        per = [s[i] for s in steps]
        agg = {"layer": i, "shape": first["shape"], "weight_norm": first["weight_norm"],
               "update_norm": first["update_norm"], "relative_update": first["relative_update"],
               "grad_norm": first["grad_norm"], "cos_update": first["cos_update"],
               "moved": sum(r["update_norm"] > 0 for r in per), "steps": len(per)}
        for key in ("cos_update", "relative_update", "cos_lifted_grad"):
            if key in first:
                agg[f"{key}_mean"], agg[f"{key}_sd"] = _mean_sd([r[key] for r in per])
        if "lifted_grad_norm" in first:
            agg["lifted_grad_norm"] = first["lifted_grad_norm"]
            agg["lifted_grad_ratio"] = first["lifted_grad_norm"] / first["grad_norm"] \
                if first["grad_norm"] > 0 else math.nan
            agg["cos_lifted_grad"] = first["cos_lifted_grad"]
        summary.append(agg)
    cfg = {k: v for k, v in config.as_json().items() if k != "sources"}
    return {"config": cfg, "steps": steps, "summary": summary}


def format_table(name: str, result: dict, batches: int) -> str:
    """A text table of ``result["summary"]`` (one line per weight layer)."""
    cfg = result["config"]
    keys = ("method", "solver", "lr", "batch_size", "state_init", "state_order", "state_steps",
            "state_lr", "lam", "rho", "tau", "inner_sweeps")
    head = f"{name}: " + ", ".join(f"{k}={cfg.get(k)}" for k in keys if cfg.get(k) is not None)
    cols = (f"{'layer':>5} {'shape':>14} {'|W|':>8} {'|dW|':>9} {'|dW|/|W|':>9} {'moved':>5} {'|G|':>9} "
            f"{'cos(dW,-G)':>10} {f'cos over {batches}':>15} {'|Gl|/|G|':>9} {'cos(Gl,G)':>9} "
            f"{f'cos(Gl,G) {batches}':>15}")
    lines = [head, cols]
    for r in result["summary"]:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{r['layer']:>5} {shape:>14} {r['weight_norm']:8.3g} {r['update_norm']:9.2e} "
            f"{r['relative_update']:9.2e} {str(r['moved']) + '/' + str(r['steps']):>5} "
            f"{r['grad_norm']:9.2e} {r['cos_update']:10.3f} "
            f"{r['cos_update_mean']:7.3f}±{r['cos_update_sd']:<7.3f} "
            f"{r.get('lifted_grad_ratio', math.nan):9.2e} {r.get('cos_lifted_grad', math.nan):9.3f} "
            f"{r.get('cos_lifted_grad_mean', math.nan):7.3f}±{r.get('cos_lifted_grad_sd', math.nan):<7.3f}")
    return "\n".join(lines)


def parse_set(items: list[str]) -> dict:
    """``["key=value", ...]`` → TrainConfig fields; values read as JSON (numbers, true/false),
    ``inf``, or strings."""
    known = {f.name for f in fields(TrainConfig)} - {"sources", "reduce_fn", "distributed"}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise SystemExit(f"--set: expected key=value with key in {sorted(known)}, got {item!r}")
        if raw.strip().lower() in ("inf", "+inf"):
            value = math.inf
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[key] = value
    return out


def task_config(name: str, args) -> TaskConfig:
    """The benchmark's size of each task (options from the command line)."""
    if name == "digits-mlp":
        extra = {"hidden_layers": args.hidden_layers, "width": args.width}
    elif name == "digits-resnet":
        extra = {"blocks": args.blocks}
    elif name == "pnn-denoise":
        extra = {"n_train": args.pnn_train, "layers": args.pnn_layers, "features": args.pnn_features}
    else:
        extra = {}
    return TaskConfig(seed=args.seed, extra=extra)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    p.add_argument("--method", default=None)
    p.add_argument("--solver", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more TrainConfig options")
    p.add_argument("--batches", type=int, default=5, help="consecutive steps (mean ± sd of the cosines)")
    p.add_argument("--seed", type=int, default=0, help="model and batch seed")
    p.add_argument("--hidden-layers", type=int, default=8, help="digits-mlp depth")
    p.add_argument("--width", type=int, default=128, help="digits-mlp width")
    p.add_argument("--blocks", type=int, default=8, help="digits-resnet residual blocks")
    p.add_argument("--pnn-layers", type=int, default=20)
    p.add_argument("--pnn-features", type=int, default=8)
    p.add_argument("--pnn-train", type=int, default=64, help="pnn-denoise training patches")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every number to this file")
    args = p.parse_args(argv)
    if args.batches < 1:
        raise SystemExit("--batches: must be >= 1")
    torch.set_num_threads(args.threads)
    user = {"batched_layers": False, "seed": args.seed, **parse_set(args.set)}
    if args.method is not None:
        user["method"] = args.method
    if args.solver is not None:
        user["solver"] = args.solver
    report = {"command": " ".join(sys.argv), "threads": args.threads, "tasks": {}}
    for name in args.tasks:
        task = make_task(name, task_config(name, args))
        result = signal(task, TrainConfig(**user), batches=args.batches)
        result["description"] = task.describe()
        report["tasks"][name] = result
        print(format_table(name, result, args.batches), end="\n\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, allow_nan=True)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    sys.exit(main())
