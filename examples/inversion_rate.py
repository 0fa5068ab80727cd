"""Convergence rate of lifted Bregman inversion of a ReLU perceptron as the noise δ → 0.

    python examples/inversion_rate.py [--size 64 --outputs 512 --c 1.0 --out inversion_rate.png]

Setting (method §5): ``N(u) = ReLU(W vec(u))``, ``W`` with N(0, 1) entries (64×64 → 512 by
default), ``J = TV``. Data ``f^δ`` has Bregman noise level δ: ``B_ReLU(f^δ, Wu†) = δ²`` exactly
(:func:`lifted_inverse.inversion.bregman_noise`, a fixed Gaussian direction rescaled per δ). The
relative levels ε = 20 %, 10 %, 5 %, 2.5 %, 1.25 % give ``δ = ε‖N(u†)‖/√2``; ``α = cδ``.

Error: the TV Bregman distance ``D_J(u†, u_α) = TV(u†) − TV(u_α) − ⟨∇ᵀp, u† − u_α⟩`` with the
solver's dual ``p`` (``∇ᵀp ∈ ∂TV(u_α)``), and ``‖u_α − u†‖²`` for reference. The theorem predicts
``D_J = O(δ)`` under the source condition ``Wᵀv† ∈ ∂TV(u†)``. A generic image does not satisfy it
(the 512 equations do not determine a 4096-pixel image), so the main curve uses
``u† = u_{α0}(N(camera))`` — the TV-regularised inversion of the camera image, which satisfies the
source condition by construction (optimality condition). The raw camera image is shown too: its
error stalls at the bias of the underdetermined problem.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.inversion import (
    a_priori_alpha,
    bregman_error,
    bregman_noise,
    invert_single_layer,
    relative_delta,
)
from lifted_inverse.inversion.pretrained import perceptron
from lifted_inverse.io import atomic_path
from lifted_inverse.lifted import lift

LEVELS = (0.2, 0.1, 0.05, 0.025, 0.0125)


def sweep(net, u_true, c: float, iterations: int):
    z = net.output_pre_activation(u_true)
    act = net.output_layer.activation
    rows = []
    for eps in LEVELS:
        delta = float(relative_delta(act(z), eps))
        f = bregman_noise(act, z, delta, seed=1)
        res = invert_single_layer(net, f, a_priori_alpha(delta, c), "tv", iterations=iterations, tol=1e-7)
        d = float(bregman_error(res, u_true))
        sq = float(((res.u - u_true) ** 2).sum())
        rows.append((eps, delta, d, sq, res.iterations, res.seconds))
        print(f"  eps {eps:6.4f}  delta {delta:9.4g}  D_J {d:10.4g}  |u-u†|² {sq:10.4g}  "
              f"({res.iterations} it, {res.seconds:.1f}s)")
    return rows


def slope(rows, col: int) -> float:
    return float(np.polyfit(np.log([r[1] for r in rows]), np.log([r[col] for r in rows]), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--outputs", type=int, default=512)
    parser.add_argument("--image", default="camera")
    parser.add_argument("--c", type=float, default=1.0, help="a priori constant: alpha = c * delta")
    parser.add_argument("--alpha0", type=float, default=50.0, help="alpha of the source-condition truth")
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--out", default="inversion_rate.png")
    args = parser.parse_args()

    dtype = torch.float64
    model = perceptron(args.size, args.outputs, seed=0, dtype=dtype)
    net = lift(model, (1, args.size, args.size))
    image = builtin_image(args.image, args.size)[None].to(dtype)
    truth = invert_single_layer(net, model(image), args.alpha0, "tv", iterations=3 * args.iterations,
                                tol=1e-9).u
    print(f"source-condition truth u† = u_α0(N({args.image})), α0 = {args.alpha0}")
    rows_sc = sweep(net, truth, args.c, args.iterations)
    print(f"raw {args.image} image as u†")
    rows_raw = sweep(net, image, args.c, args.iterations)
    s_sc, s_sq, s_raw = slope(rows_sc, 2), slope(rows_sc, 3), slope(rows_raw, 2)
    print(f"fitted log-log slopes: D_J {s_sc:.2f}, |u-u†|² {s_sq:.2f} (source condition); "
          f"D_J {s_raw:.2f} (raw image); theorem: 1")

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), constrained_layout=True)
    ax = fig.subplots()
    deltas = np.array([r[1] for r in rows_sc])
    ax.loglog(deltas, [r[2] for r in rows_sc], "o-", label=f"D_TV(u†, u_α), u† with source cond. (slope {s_sc:.2f})")
    ax.loglog(deltas, [r[3] for r in rows_sc], "s--", label=f"‖u_α − u†‖² (slope {s_sq:.2f})")
    ax.loglog([r[1] for r in rows_raw], [r[2] for r in rows_raw], "^:",
              label=f"D_TV, raw image as u† (slope {s_raw:.2f})")
    ref = rows_sc[0][2] * deltas / deltas[0]
    ax.loglog(deltas, ref, "k-", lw=0.8, label="theorem: O(δ)")
    ax.set_xlabel("noise level δ  (B_Ψ(f^δ, Wu† + b) = δ²)")
    ax.set_ylabel("error")
    ax.set_title(f"ReLU perceptron {args.size}²→{args.outputs}, TV, α = {args.c:g}·δ")
    ax.legend(fontsize=8)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
