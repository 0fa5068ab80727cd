"""TV-PDHG and Tikhonov-CG before / after convergence-based stopping (issue 16, deliverable 4).

The README's main problem (``reconstruct --operator ct --method tv --image shepp_logan``: 128x128
Shepp-Logan, 60 angles, 1 % relative noise, the default alpha) and a deblurring problem (camera
128x128, the default Gaussian blur, noise 0.05, default alpha), both simulated as the
``reconstruct`` job does. Each solver setting runs ``--rounds`` times, alternating, on one thread;
the first round also builds the operator caches, so medians are reported.

* TV before: the former defaults, step balance 0.03 and 300 iterations (no stopping test met);
* TV after: the library defaults, relative primal-dual gap <= 1e-3 (cap 5000);
* TV reference: gap <= 1e-6, once, for the minimum energy;
* Tikhonov before: 300 iterations, relative residual 1e-5; after: cap 2000, residual 1e-6.

    python benchmarks/bench_tv_stopping.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import torch

from lifted_inverse.jobs.reconstruct import ReconstructOptions, resolve, simulate_problem
from lifted_inverse.metrics import psnr
from lifted_inverse.reconstruction import default_alpha, tikhonov_cg, tv_pdhg


def problem(operator: str, image: str):
    cfg = resolve(ReconstructOptions(operator=operator, image=image, method="tv"))
    pb = simulate_problem(cfg, None)
    sigma = float(pb.noise_std[0])
    return pb.operator, pb.y, pb.truth, sigma


def settings(A, y, sigma):
    a_tv, a_tk = default_alpha(A, sigma, "tv"), default_alpha(A, sigma, "tikhonov")
    tv = functools.partial(tv_pdhg, A, y, a_tv, nonneg=True)
    tk = functools.partial(tikhonov_cg, A, y, a_tk, regulariser="gradient")
    return {
        "tv before (balance 0.03, 300 it)": lambda: tv(max_iter=300, tol=1e-300, balance=0.03),
        "tv after (gap <= 1e-3, cap 5000)": lambda: tv(max_iter=5000, tol=1e-3),
        "tv reference (gap <= 1e-6)": lambda: tv(max_iter=20000, tol=1e-6),
        "tikhonov before (300 it, residual 1e-5)": lambda: tk(max_iter=300, tol=1e-5),
        "tikhonov after (cap 2000, residual 1e-6)": lambda: tk(max_iter=2000, tol=1e-6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for operator, image in (("ct", "shepp_logan"), ("blur", "camera")):
        A, y, x, sigma = problem(operator, image)
        runs = settings(A, y, sigma)
        times = {k: [] for k in runs}
        results = {}
        for r in range(args.rounds):
            for name, run in runs.items():
                if name.startswith("tv reference") and r > 0:
                    continue
                start = time.perf_counter()
                results[name] = run()
                times[name].append(time.perf_counter() - start)
        print(f"{operator} / {image}:")
        for name, res in results.items():
            h = res.history
            last = (f"rel_gap {h['rel_gap'][-1]:.2e}, E {h['energy'][-1]:.6f}" if "rel_gap" in h
                    else f"residual {h['residual'][-1]:.2e}")
            print(f"  {name}: PSNR {float(psnr(res.x, x, 1.0).mean()):.3f} dB, {res.iterations} it, "
                  f"converged {res.converged}, {last}, median {statistics.median(times[name]):.2f} s "
                  f"({', '.join(f'{t:.2f}' for t in times[name])})")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    sys.exit(main())
