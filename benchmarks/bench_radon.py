"""Radon forward + adjoint timings: ours (sparse, matrix-free) vs ODL RayTransform and skimage.

    python benchmarks/bench_radon.py                 # 128x128, batch 16, 180 angles, both paths
    python benchmarks/bench_radon.py --size 512      # the matrix-free target (sparse: --methods)
    options: --batch 16 --angles 180 --repeats 5 --threads 2 --model joseph|bilinear
             --methods sparse,matrix_free --skimage-images 16 (0: skip skimage)

Timings are medians over ``--repeats`` rounds; every round times each implementation once, in turn
(round robin), so load from other processes hits all of them alike. Each is warmed up first.
"build" is the first call of ours (sparse: assembling and caching ``R`` and ``R^T``; matrix-free:
nothing to build, the first call itself). ODL uses astra_cpu if the ``astra`` module imports, else
skimage; ODL and skimage have no batch axis, so they loop over the batch. skimage: ``radon`` for the
forward map and ``iradon(filter_name=None)`` as the backprojection (not an exact adjoint); it is
timed on ``--skimage-images`` images and scaled linearly to the batch (it is a Python loop over the
images). Ratios are speed-ups: their time / our time for forward + adjoint. Every implementation
uses ``size`` detector bins (skimage's ``circle=True`` geometry: the inscribed disc), not the
``ceil(sqrt(2) size)`` of :class:`Radon`'s default, so the timings are for the same sinogram size.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from lifted_inverse.operators import Radon
from lifted_inverse.operators.odl_interop import odl_ray_transform


def odl_backend() -> str:
    try:
        import astra  # noqa: F401
        return "astra_cpu"
    except ImportError:
        return "skimage"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(size: int, batch: int, n_angles: int, repeats: int, methods, model: str, sk_images: int):
    """Rows ``(name, forward s, adjoint s, build s or None)``."""
    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(img)[None, None].repeat(batch, 1, 1, 1)
    cases = {}  # name -> (forward fn, adjoint fn, scale)
    builds = {}
    for method in methods:
        t0 = time.perf_counter()
        op = Radon(size, n_angles=n_angles, n_detectors=size, method=method, model=model)
        y = op(x)  # builds and caches the sparse matrices
        builds[f"ours {method} ({model}, float32, batched)"] = time.perf_counter() - t0
        cases[f"ours {method} ({model}, float32, batched)"] = (
            (lambda op=op: op(x)), (lambda op=op, y=y: op.adjoint(y)), 1.0)
    backend = odl_backend()
    T = odl_ray_transform(size, n_angles, impl=backend, n_detectors=size)
    xs = [T.domain.element(img) for _ in range(batch)]
    ys = [T(v) for v in xs]
    cases[f"ODL RayTransform {backend} (loop)"] = (
        lambda: [T(v) for v in xs], lambda: [T.adjoint(v) for v in ys], 1.0)
    if sk_images:
        k = min(sk_images, batch)
        theta = np.degrees(Radon(size, n_angles=n_angles).angles)
        sino = radon(img.astype(np.float64), theta=theta, circle=True)
        cases[f"skimage radon / iradon(no filter) (loop{'' if k == batch else f', {k} imgs x {batch / k:g}'})"] = (
            lambda: [radon(img, theta=theta, circle=True) for _ in range(k)],
            lambda: [iradon(sino, theta=theta, circle=True, filter_name=None) for _ in range(k)],
            batch / k)
    for fwd, adj, _ in cases.values():  # warm-up
        fwd()
        adj()
    times = {name: ([], []) for name in cases}
    for _ in range(repeats):
        for name, (fwd, adj, scale) in cases.items():
            times[name][0].append(_timed(fwd) * scale)
            times[name][1].append(_timed(adj) * scale)
    rows = [(name, statistics.median(f), statistics.median(a), builds.get(name)) for name, (f, a) in times.items()]
    return rows, backend


def print_table(title: str, rows) -> None:
    refs = [("ODL " + r[0].split()[2] if r[0].startswith("ODL") else "skimage", r[1] + r[2])
            for r in rows if not r[0].startswith("ours")]
    print(f"\n{title}")
    head = f"{'implementation':58s} {'build s':>8s} {'forward s':>10s} {'adjoint s':>10s} {'fwd+adj s':>10s}"
    print(head + "".join(f" {'x vs ' + n:>18s}" for n, _ in refs))
    for name, f, a, build in rows:
        b = f"{build:8.2f}" if build is not None else f"{'':8s}"
        line = f"{name:58s} {b} {f:10.4f} {a:10.4f} {f + a:10.4f}"
        if name.startswith("ours"):
            line += "".join(f" {ref / (f + a):18.1f}" for _, ref in refs)
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--angles", type=int, default=180)
    p.add_argument("--repeats", type=int, default=None, help="default 7 (size <= 256) or 3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="joseph", choices=("joseph", "bilinear"))
    p.add_argument("--methods", default="sparse,matrix_free")
    p.add_argument("--skimage-images", type=int, default=None,
                   help="images skimage is timed on, scaled to the batch (0: skip); default batch (size <= 256) or 2")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    small = args.size <= 256
    repeats = args.repeats or (7 if small else 3)
    sk = args.skimage_images if args.skimage_images is not None else (args.batch if small else 2)
    methods = [m for m in args.methods.split(",") if m]
    rows, backend = bench(args.size, args.batch, args.angles, repeats, methods, args.model, sk)
    print_table(f"{args.size}x{args.size}, batch {args.batch}, {args.angles} angles, {args.threads} threads, "
                f"median of {repeats} (x: their fwd+adj time / ours)", rows)
    print(f"\nODL backend: {backend}; torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    main()
