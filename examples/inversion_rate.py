"""Convergence rate of lifted Bregman inversion of a ReLU perceptron as δ → 0, where the theorem applies.

    python examples/inversion_rate.py [--size 64 --outputs 512 --out docs/figures/inversion_rate.png]

Setting (method §5): ``N(u) = ReLU(W vec(u))``, ``W`` with N(0, 1) entries (64×64 → 512 by
default), ``J = TV``. Theorem: if ``B_Ψ(f^δ, Wu†) ≤ δ²`` and ``Wᵀv† ∈ ∂J(u†)`` then

    D_J(u†, u_α) ≤ 2δ²/α + α‖v†‖² + (Ψ(f^δ + αv†) + Ψ(f^δ − αv†) − 2Ψ(f^δ))/α,

with ``Ψ = ι_{≥0}`` for ReLU: the last term is 0 when ``f^δ ± αv† ≥ 0`` and +∞ otherwise.

Construction (:func:`lifted_inverse.inversion.source_condition_pair`): ``S`` = the rows where
``W x`` (x = the camera image) is above the median of its positive entries, ``u†`` = the
TV-regularised least-squares fit of ``(W x)_S`` by the rows ``S`` (weight ``α0``), and
``v† = (W x − W u†)_S / α0`` on ``S``, 0 elsewhere: the optimality condition of ``u†`` is the
source condition, and ``v†`` vanishes on the rows where ReLU clips, so ``f^δ ± αv†`` stays ≥ 0
for small ``α`` (checked per δ: the printed ``margin = min_S (f^δ − α|v†|)`` must be ≥ 0).

Data ``f^δ`` has Bregman noise level δ exactly (:func:`lifted_inverse.inversion.bregman_noise`,
one Gaussian direction rescaled per δ); relative levels ε give ``δ = ε‖N(u†)‖/√2``;
``α = c·δ`` with ``c = √2/‖v†‖``, the constant that minimises the bound (``2√2‖v†‖δ``).
Measured: ``D_TV(u†, u_α)`` with the solver's dual ``p`` (``∇ᵀp ∈ ∂TV(u_α)``), and the
stationarity residual ``‖Wᵀ(σ(Wu_α) − f^δ) + α∇ᵀp‖ / ‖α∇ᵀp‖`` that certifies ``u_α`` and ``p``.
The TV prox takes ``--prox-iterations`` warm-started dual steps per FISTA step.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.inversion import (
    bregman_error,
    bregman_noise,
    invert_single_layer,
    rate_bound,
    relative_delta,
    source_condition_pair,
)
from lifted_inverse.inversion.pretrained import perceptron
from lifted_inverse.inversion.regularizers import TotalVariation
from lifted_inverse.io import atomic_path
from lifted_inverse.lifted import lift

LEVELS = (0.08, 0.04, 0.02, 0.01, 0.005, 0.0025)


def stationarity(res, alpha: float) -> float:
    """``‖∇g(u) + α∇ᵀp‖ / ‖α∇ᵀp‖`` at the solver's last point (0 at the exact minimiser)."""
    reg = res.state["regularizer"]
    sub = reg.subgradient(res.u, res.state, res.state["grad"], alpha)
    return float(torch.linalg.vector_norm(res.state["grad"] + alpha * sub)
                 / torch.linalg.vector_norm(alpha * sub).clamp_min(1e-300))


def sweep(net, pair, reg, c: float, iterations: int, tol: float):
    """One inversion per level (warm-started from the previous, larger δ); rows of results."""
    act = net.output_layer.activation
    z = net.output_pre_activation(pair.u)
    rows, previous = [], None
    for eps in LEVELS:
        delta = float(relative_delta(act(z), eps))
        f = bregman_noise(act, z, delta, seed=1)
        alpha = c * delta
        warm = {} if previous is None else {"u0": previous.u, "state": previous.state}
        res = invert_single_layer(net, f, alpha, reg, iterations=iterations, tol=tol, **warm)
        previous = res
        d = float(bregman_error(res, pair.u))
        bound = float(rate_bound(act, f, pair.v, delta, alpha))
        margin = float((f - alpha * pair.v.abs())[0, pair.support].min())
        stat = stationarity(res, alpha)
        rows.append({"eps": eps, "delta": delta, "alpha": alpha, "D": d, "bound": bound, "margin": margin,
                     "stationarity": stat, "iterations": res.iterations, "seconds": res.seconds,
                     "error_sq": float(((res.u - pair.u) ** 2).sum())})
        print(f"  eps {eps:7.4f}  delta {delta:9.4g}  alpha {alpha:9.4g}  D_J {d:10.4g}  bound {bound:10.4g}  "
              f"margin {margin:9.3g}  stationarity {stat:8.2g}  ({res.iterations} it, {res.seconds:.1f}s)",
              flush=True)
    return rows


def slope(rows, key: str) -> float:
    return float(np.polyfit(np.log([r["delta"] for r in rows]), np.log([r[key] for r in rows]), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--outputs", type=int, default=512)
    parser.add_argument("--image", default="camera")
    parser.add_argument("--alpha0", type=float, default=1.0, help="TV weight of the construction of u†")
    parser.add_argument("--iterations", type=int, default=4000, help="FISTA steps per level and for u† (a cap)")
    parser.add_argument("--tol", type=float, default=1e-10, help="stop at this relative change of u")
    parser.add_argument("--prox-iterations", type=int, default=80,
                        help="dual steps of the TV prox per FISTA step (fewer stall above the minimiser at 64²)")
    parser.add_argument("--out", default="inversion_rate.png")
    args = parser.parse_args()

    dtype = torch.float64
    model = perceptron(args.size, args.outputs, seed=0, dtype=dtype)
    net = lift(model, (1, args.size, args.size))
    reg = TotalVariation(prox_iterations=args.prox_iterations)
    image = builtin_image(args.image, args.size)[None].to(dtype)
    pair = source_condition_pair(net, image, args.alpha0, reg, iterations=args.iterations, tol=1e-12)
    v_norm = float(torch.linalg.vector_norm(pair.v))
    c = math.sqrt(2.0) / v_norm
    print(f"u†, v†: |S| = {pair.support.numel()} of {args.outputs} rows, ‖v†‖ = {v_norm:.4g}, "
          f"source-condition residual {pair.residual:.2g}; alpha = {c:.4g}·delta", flush=True)
    rows = sweep(net, pair, reg, c, args.iterations, args.tol)
    inside = [r for r in rows if math.isfinite(r["bound"])]
    s_d = slope(rows, "D")
    print(f"fitted log-log slope of D_J: {s_d:.2f} (theorem: 1); bound finite at {len(inside)} of "
          f"{len(rows)} levels; D_J <= bound at {sum(r['D'] <= r['bound'] for r in inside)} of them", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), constrained_layout=True)
    ax = fig.subplots()
    deltas = np.array([r["delta"] for r in rows])
    ax.loglog(deltas, [r["D"] for r in rows], "o-", label=f"measured D_TV(u†, u_α) (slope {s_d:.2f})")
    ax.loglog([r["delta"] for r in inside], [r["bound"] for r in inside], "k--",
              label="theorem: 2δ²/α + α‖v†‖²  (= 2√2‖v†‖δ)")
    ax.loglog(deltas, [r["error_sq"] for r in rows], "s:", label=f"‖u_α − u†‖² (slope {slope(rows, 'error_sq'):.2f})")
    ax.set_xlabel("noise level δ  (B_Ψ(f^δ, Wu†) = δ²)")
    ax.set_ylabel("error")
    ax.set_title(f"ReLU perceptron {args.size}²→{args.outputs}, TV, α = {c:.3g}·δ, Wᵀv† ∈ ∂TV(u†)")
    ax.legend(fontsize=8)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
