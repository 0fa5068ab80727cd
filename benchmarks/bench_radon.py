"""Radon forward + adjoint timings: ours (sparse, matrix-free) vs ODL RayTransform and skimage.

    python benchmarks/bench_radon.py [--size 128 --batch 16 --angles 180 --repeats 5 --threads 2
                                      --large 512 --large-repeats 2]

Median wall-clock seconds per call over ``--repeats`` (after a warm-up call; the sparse matrix is
assembled once before timing, its build time is printed separately). ODL uses astra_cpu if the
``astra`` module imports, else skimage; ODL and skimage have no batch axis, so they loop over it.
skimage: ``radon`` for the forward map, ``iradon(filter_name=None)`` as the backprojection (not an
exact adjoint).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from lifted_inverse.operators import Radon
from lifted_inverse.operators.odl_interop import odl_ray_transform


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def odl_backend() -> str:
    try:
        import astra  # noqa: F401
        return "astra_cpu"
    except ImportError:
        return "skimage"


def bench(size: int, batch: int, n_angles: int, repeats: int, methods, with_skimage: bool):
    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(img)[None, None].repeat(batch, 1, 1, 1)
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        op = Radon(size, n_angles=n_angles, method=method)
        y = op(x)  # builds and caches the sparse matrix
        build = time.perf_counter() - t0
        f = median_time(lambda: op(x), repeats)
        a = median_time(lambda: op.adjoint(y), repeats)
        rows.append((f"ours {method} (float32, batched)", f, a, build))
    backend = odl_backend()
    T = odl_ray_transform(size, n_angles, impl=backend)
    xs = [T.domain.element(img) for _ in range(batch)]
    ys = [T(v) for v in xs]
    f = median_time(lambda: [T(v) for v in xs], repeats)
    a = median_time(lambda: [T.adjoint(v) for v in ys], repeats)
    rows.append((f"ODL RayTransform {backend} (loop)", f, a, None))
    if with_skimage:
        theta = np.degrees(Radon(size, n_angles=n_angles, method="matrix_free").angles)
        sino = radon(img.astype(np.float64), theta=theta, circle=True)
        f = median_time(lambda: [radon(img, theta=theta, circle=True) for _ in range(batch)], repeats)
        a = median_time(lambda: [iradon(sino, theta=theta, circle=True, filter_name=None)
                                 for _ in range(batch)], repeats)
        rows.append(("skimage radon / iradon(no filter) (loop)", f, a, None))
    return rows, backend


def print_table(title: str, rows) -> None:
    ref = rows[0][1] + rows[0][2]
    print(f"\n{title}")
    print(f"{'implementation':44s} {'forward s':>10s} {'adjoint s':>10s} {'fwd+adj s':>10s} {'x ours[0]':>10s}")
    for name, f, a, build in rows:
        extra = f"   (first call incl. setup {build:.2f} s)" if build else ""
        print(f"{name:44s} {f:10.4f} {a:10.4f} {f + a:10.4f} {(f + a) / ref:10.1f}{extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--angles", type=int, default=180)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--large", type=int, default=512, help="size of the matrix-free comparison (0: skip)")
    p.add_argument("--large-repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows, backend = bench(args.size, args.batch, args.angles, args.repeats, ("sparse", "matrix_free"), True)
    print_table(f"{args.size}x{args.size}, batch {args.batch}, {args.angles} angles, "
                f"{args.threads} threads (ratio: time / ours sparse)", rows)
    if args.large:
        rows, _ = bench(args.large, args.batch, args.angles, args.large_repeats, ("matrix_free",), False)
        print_table(f"{args.large}x{args.large}, batch {args.batch}, {args.angles} angles "
                    f"(ratio: time / ours matrix-free)", rows)
    print(f"\nODL backend: {backend}")


if __name__ == "__main__":
    main()
