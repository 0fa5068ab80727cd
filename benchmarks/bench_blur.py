"""Zero-boundary blur against the circular FFT blur and a plain ``conv2d`` reference.

For a batch of ``B`` one-channel ``N x N`` images and a ``K x K`` Gaussian kernel (σ = K/6), the
median time of the forward map and of the adjoint of

* ``zero``: :class:`~lifted_inverse.operators.Blur` with ``boundary='zero'`` (FFT over a padded
  grid);
* ``circular``: :class:`~lifted_inverse.operators.Blur` with ``boundary='circular'`` (FFT on the
  image grid);
* ``conv2d``: ``F.conv2d`` of the zero-padded batch with the flipped kernel (forward) or the
  kernel (adjoint): the direct zero-boundary convolution, which is what ``Blur(boundary='zero')``
  computed before it moved to the FFT path.

The three are timed in alternation (one call of each per round, in a seeded random order per
round, ``--repeats`` rounds), after
``--warmup`` rounds; medians and the ratios ``zero / circular`` and ``conv2d / zero`` come from
the same run. Each call is timed by the thread's CPU clock (``time.thread_time``: on a shared
machine it leaves out the time the process waits for a core, which the wall clock counts) and by
the wall clock; the table shows the CPU medians and the wall-clock ratio, the JSON rows keep
medians and minima of both. The zero-boundary outputs are checked against ``conv2d`` first (max abs difference
printed). Defaults: batch 16, 128², 9x9, float32, one thread::

    python benchmarks/bench_blur.py --threads 1 --json blur.json
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lifted_inverse.operators import Blur, gaussian_kernel


def conv2d_blur(x: torch.Tensor, kernel: torch.Tensor, adjoint: bool) -> torch.Tensor:
    """The zero-boundary convolution (or its adjoint, a correlation) by ``F.conv2d``, with the
    module convention of :mod:`lifted_inverse.operators.blur` (centre ``(kh//2, kw//2)``)."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    ch, cw = kh // 2, kw // 2
    if adjoint:
        weight, pad = kernel, (cw, kw - 1 - cw, ch, kh - 1 - ch)
    else:
        weight, pad = torch.flip(kernel, (0, 1)), (kw - 1 - cw, cw, kh - 1 - ch, ch)
    return F.conv2d(F.pad(x.reshape(b * c, 1, h, w), pad), weight[None, None]).reshape(b, c, h, w)


def bench(batch: int, size: int, kernel_size: int, dtype: torch.dtype, repeats: int, warmup: int) -> dict:
    kernel = gaussian_kernel(kernel_size, kernel_size / 6.0)
    zero, circ = Blur((1, size, size), kernel, "zero"), Blur((1, size, size), kernel, "circular")
    k = kernel.to(dtype)
    x = torch.randn((batch, 1, size, size), generator=torch.Generator().manual_seed(0), dtype=dtype)
    runs = {
        "zero": (lambda: zero(x), lambda: zero.adjoint(x)),
        "circular": (lambda: circ(x), lambda: circ.adjoint(x)),
        "conv2d": (lambda: conv2d_blur(x, k, False), lambda: conv2d_blur(x, k, True)),
    }
    error = max(float((zero(x) - conv2d_blur(x, k, False)).abs().max()),
                float((zero.adjoint(x) - conv2d_blur(x, k, True)).abs().max()))
    keys = [(name, part) for name in runs for part in ("forward", "adjoint")]
    cpu, wall = {k: [] for k in keys}, {k: [] for k in keys}
    calls = [(name, part, fn) for name, pair in runs.items() for part, fn in zip(("forward", "adjoint"), pair)]
    order = random.Random(0)
    with torch.no_grad():
        for r in range(warmup + repeats):
            order.shuffle(calls)  # no variant always runs first (after the cache-flushing conv2d)
            for name, part, fn in calls:
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                c1, t1 = time.thread_time(), time.perf_counter()
                if r >= warmup:
                    cpu[(name, part)].append(c1 - c0)
                    wall[(name, part)].append(t1 - t0)
    out = {"batch": batch, "size": size, "kernel": kernel_size, "dtype": str(dtype).replace("torch.", ""),
           "fft_grid": list(zero.grid), "max_abs_diff_vs_conv2d": error}
    for clock, times in (("cpu", cpu), ("wall", wall)):
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        for (name, part), v in med.items():
            out[f"{name}_{part}_{clock}_ms"] = v
            out[f"{name}_{part}_{clock}_min_ms"] = 1e3 * min(times[(name, part)])
        for part in ("forward", "adjoint"):
            out[f"{part}_zero_over_circular_{clock}"] = med[("zero", part)] / med[("circular", part)]
            out[f"{part}_conv2d_over_zero_{clock}"] = med[("conv2d", part)] / med[("zero", part)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, nargs="+", default=[128])
    p.add_argument("--kernel", type=int, nargs="+", default=[9], help="kernel side(s) K")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the rows to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = [bench(args.batch, n, k, dtype, args.repeats, args.warmup) for n in args.size for k in args.kernel]
    print(f"{'N':>5} {'K':>3} {'grid':>9} | {'zero':>8} {'circ':>8} {'conv2d':>8} | "
          f"{'zero/circ':>9} {'conv2d/zero':>11} | {'wall: zero/circ':>15}   "
          f"(thread CPU ms, median of {args.repeats})")
    for r in rows:
        for part in ("forward", "adjoint"):
            print(f"{r['size']:>5} {r['kernel']:>3} {'x'.join(map(str, r['fft_grid'])):>9} | "
                  f"{r[f'zero_{part}_cpu_ms']:8.3f} {r[f'circular_{part}_cpu_ms']:8.3f} "
                  f"{r[f'conv2d_{part}_cpu_ms']:8.3f} | {r[f'{part}_zero_over_circular_cpu']:9.2f} "
                  f"{r[f'{part}_conv2d_over_zero_cpu']:11.2f} | {r[f'{part}_zero_over_circular_wall']:15.2f}   {part}")
        print(f"      max |zero - conv2d| = {r['max_abs_diff_vs_conv2d']:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    main()
