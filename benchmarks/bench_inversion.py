"""Lifted Bregman inversion vs gradient-based inversion (backprop through N) at equal wall-clock.

    python benchmarks/bench_inversion.py [--noise 0.05 --digits 6 --threads 1]

Perceptron 64×64 → 512 (camera image) and the digits conv encoder (held-out digits), TV, noise of
relative level ε (Bregman noise, ``δ = ε‖N(u†)‖/√2``), a-priori ``α = cδ`` (c = 1 perceptron,
0.05 encoder), start ``u0 = 0.5``, box [0, 1] for all methods. The lifted solver runs its
iteration budget; proximal gradient descent and Adam then run for the same number of seconds.
Prints PSNR (dB) and seconds per method.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.inversion import (
    bregman_noise,
    continuation,
    describe,
    forward_states,
    invert,
    invert_gradient,
    pretrained,
    relative_delta,
)
from lifted_inverse.inversion.layers import output_activation, output_pre_activation


def psnr(u, x):
    return float(10 * torch.log10(1 / ((u - x) ** 2).mean()))


def compare(model, shape, x, noise, c, iterations, lr, deep):
    stages = describe(model, shape)
    with torch.no_grad():
        z = output_pre_activation(stages[-1], forward_states(stages[:-1], x))
        act = output_activation(stages[-1])
        delta = float(relative_delta(act(z), noise))
        f = bregman_noise(act, z, delta, seed=1)
    u0 = torch.full_like(x, 0.5)
    alpha = c * delta
    r = invert(stages, f, alpha, "tv", u0=u0, iterations=iterations, bounds=(0, 1), tol=1e-7, **deep)
    budget = dict(iterations=100 * iterations, time_limit=r.seconds, u0=u0, bounds=(0, 1), tol=1e-7,
                  input_shape=shape)
    g = invert_gradient(model, f, alpha, "tv", method="gd", lr=1e-3, **budget)
    a = invert_gradient(model, f, alpha, "tv", method="adam", lr=lr, **budget)
    return [(psnr(m.u, x), m.seconds, m.iterations) for m in (r, g, a)]


def report(name, rows):
    rows = np.array(rows)  # (samples, 3 methods, 3)
    print(f"{name}: mean over {rows.shape[0]} image(s)")
    for j, method in enumerate(("lifted", "gradient descent", "adam")):
        print(f"  {method:17s} PSNR {rows[:, j, 0].mean():6.2f} dB   {rows[:, j, 1].mean():6.2f} s   "
              f"{rows[:, j, 2].mean():7.0f} it")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    net = pretrained.perceptron(64, 512)
    x = builtin_image("camera", 64)[None]
    report("perceptron 64x64->512, camera", [compare(net, (1, 64, 64), x, args.noise, 1.0, 500, 3e-2, {})])

    enc = pretrained.encoder()
    deep = dict(inner_u=3, inner_states=3, weights=continuation(3, 10.0, 100))
    rows = [compare(enc, (1, 16, 16), d[None], args.noise, 0.05, 300, 1e-2, deep)
            for d in pretrained.digits("test")[: args.digits]]
    report("conv encoder 16x16->100, digits", rows)


if __name__ == "__main__":
    main()
