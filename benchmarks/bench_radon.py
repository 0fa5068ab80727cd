"""Radon forward + adjoint timings: ours (sparse, matrix-free) vs ODL RayTransform and skimage;
fan beam vs ASTRA; the batch-size sweep of the sparse path; the analytic referee and FBP figures.

    python benchmarks/bench_radon.py                 # 128x128, batch 16, 180 angles, both paths
    python benchmarks/bench_radon.py --size 512      # the matrix-free target (sparse: --methods)
    options: --batch 16 --angles 180 --repeats 5 --threads 2 --model joseph|bilinear
             --methods sparse,matrix_free --skimage-images 16 (0: skip skimage)
    python benchmarks/bench_radon.py --batch-sweep   # sparse, 128², 60 angles: time per image at
                                                     # batch 1, 2, 4, 16 (and the embedding_bag-only kernel)
    python benchmarks/bench_radon.py --fan           # fan beam 256², 360 angles over 2π, 400 bins,
                                                     # batch 16: ours vs astra_cpu line_fanflat
    python benchmarks/bench_radon.py --referee       # projector vs exact ellipse line integrals
                                                     # (256², both geometries), FBP PSNR

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
import math
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


def _round_robin(cases: dict, repeats: int) -> dict:
    """``{name: [seconds per round]}`` of zero-argument callables, timed round robin after a warm-up."""
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    return times


def _median_times(cases: dict, repeats: int) -> dict:
    """``{name: median seconds}`` (:func:`_round_robin`)."""
    return {name: statistics.median(t) for name, t in _round_robin(cases, repeats).items()}


def batch_sweep(repeats: int, size: int = 128, n_angles: int = 60, batches=(1, 2, 4, 16)) -> None:
    """Per-image forward / adjoint time of the sparse Radon at several batch sizes, float32 and
    float64, with the library's kernel choice and with embedding_bag for every batch (the kernel
    it used for all batches before the CSR path for small batches)."""
    import torch.nn.functional as F

    from lifted_inverse.operators.radon import _system_matrix

    op = Radon(size, n_angles=n_angles, method="sparse")
    print(f"\nsparse Radon {size}x{size}, {n_angles} angles, {op.n_detectors} bins: ms per image, "
          f"fastest / median of {repeats} rounds (round robin)")
    print(f"{'dtype':8s} {'batch':>5s} {'fwd':>14s} {'adj':>14s} {'fwd emb_bag':>14s} {'adj emb_bag':>14s}")
    for dtype in (torch.float32, torch.float64):
        mat, mat_t = _system_matrix(op._sampling, dtype, torch.device("cpu"), False)

        def bag(m, v):
            return F.embedding_bag(m.col_indices(), v, m.crow_indices(), mode="sum",
                                   per_sample_weights=m.values(), include_last_offset=True)

        cases = {}
        for b in batches:
            x = torch.rand(b, 1, size, size, dtype=dtype)
            y = op(x)
            x2, y2 = x.reshape(b, -1).T.contiguous(), y.reshape(b, -1).T.contiguous()
            cases[(b, "fwd")] = lambda op=op, x=x: op(x)
            cases[(b, "adj")] = lambda op=op, y=y: op.adjoint(y)
            cases[(b, "fwd_bag")] = lambda x2=x2, m=mat: bag(m, x2)
            cases[(b, "adj_bag")] = lambda y2=y2, m=mat_t: bag(m, y2)
        runs = _round_robin(cases, repeats)
        for b in batches:
            cells = [f"{1e3 * min(runs[(b, k)]) / b:6.3f}/{1e3 * statistics.median(runs[(b, k)]) / b:<7.3f}"
                     for k in ("fwd", "adj", "fwd_bag", "adj_bag")]
            print(f"{str(dtype).split('.')[-1]:8s} {b:5d} " + " ".join(f"{c:>14s}" for c in cells))


def fan_vs_astra(repeats: int, size: int = 256, batch: int = 16, n_angles: int = 360,
                 n_det: int = 400) -> None:
    """Fan beam (flat detector, source-origin = origin-detector = 2N, bins of 2 pixels: 1 at the
    isocentre) forward + adjoint of a batch: ours (sparse, matrix-free; float32) vs ASTRA's
    ``line_fanflat`` CPU projector on the same rays (:func:`astra_geometries`), looped over the
    batch; and the relative L2 difference of the sinograms of a smooth ellipse phantom."""
    from lifted_inverse.operators import FanBeamGeometry
    from lifted_inverse.operators.analytic import (
        ellipse_image,
        ellipse_sinogram,
        shepp_logan_ellipses,
    )

    g = FanBeamGeometry(size, n_angles, n_det, 2.0, 2.0 * size, 2.0 * size)
    ell = shepp_logan_ellipses(0.45 * size)
    img = ellipse_image(ell, size, smoothness=2)
    x = img.float().repeat(batch, 1, 1, 1)
    cases, builds, sinos = {}, {}, {}
    for method in ("sparse", "matrix_free"):
        t0 = time.perf_counter()
        op = Radon(geometry=g, method=method)
        y = op(x)
        builds[method] = time.perf_counter() - t0
        sinos[f"ours {method}"] = y[0, 0].double()
        cases[f"ours {method} fwd"] = lambda op=op: op(x)
        cases[f"ours {method} adj"] = lambda op=op, y=y: op.adjoint(y)
    try:
        import astra
    except ImportError:
        astra = None
        print("\nastra not importable: ours only")
    if astra is not None:
        from lifted_inverse.operators.astra_geometry import astra_geometries

        vol, proj = astra_geometries(g)
        pid = astra.create_projector("line_fanflat", proj, vol)
        imgs = [x[i, 0].numpy() for i in range(batch)]
        sid, s0 = astra.create_sino(imgs[0], pid)
        astra.data2d.delete(sid)
        sinos["astra line_fanflat"] = torch.as_tensor(s0, dtype=torch.float64)

        def astra_fwd():
            for im in imgs:
                i, _ = astra.create_sino(im, pid)
                astra.data2d.delete(i)

        def astra_adj():
            for _ in imgs:
                i, _ = astra.create_backprojection(s0, pid)
                astra.data2d.delete(i)

        cases["astra_cpu line_fanflat fwd"] = astra_fwd
        cases["astra_cpu line_fanflat adj"] = astra_adj
    med = _median_times(cases, repeats)
    exact = ellipse_sinogram(ell, g, smoothness=2)[0, 0]
    print(f"\nfan beam {size}x{size}, {n_angles} angles over 2π, {n_det} bins, batch {batch}, "
          f"{torch.get_num_threads()} threads, median of {repeats}")
    names = sorted({k.rsplit(" ", 1)[0] for k in cases})
    ref = med.get("astra_cpu line_fanflat fwd", 0) + med.get("astra_cpu line_fanflat adj", 0)
    print(f"{'implementation':30s} {'build s':>8s} {'fwd s':>8s} {'adj s':>8s} {'fwd+adj s':>10s} {'x vs astra':>10s}")
    for name in names:
        f, a = med[f"{name} fwd"], med[f"{name} adj"]
        b = builds.get(name.split()[-1]) if name.startswith("ours") else None
        bs = f"{b:8.2f}" if b is not None else f"{'':8s}"
        ratio = f"{ref / (f + a):10.1f}" if ref else ""
        print(f"{name:30s} {bs} {f:8.3f} {a:8.3f} {f + a:10.3f} {ratio}")
    print("\nrelative L2 differences of the sinograms (smooth k=2 Shepp-Logan ellipses):")
    for name, s in sinos.items():
        print(f"  {name:24s} vs exact: {float((s - exact).norm() / exact.norm()):.4%}")
    if "astra line_fanflat" in sinos:
        s = sinos["astra line_fanflat"]
        print(f"  ours sparse vs astra line_fanflat: "
              f"{float((sinos['ours sparse'] - s).norm() / s.norm()):.4%}")


def referee(size: int = 256) -> None:
    """Relative L2 error of the projector against the exact line integrals of the Shepp-Logan
    ellipses (profile smoothness k = 0, 1, 2) for the two geometries, and the FBP PSNR of the
    noiseless discrete Shepp-Logan phantom (360 angles)."""
    from lifted_inverse.datasets.phantoms import shepp_logan
    from lifted_inverse.metrics import psnr
    from lifted_inverse.operators import FanBeamGeometry, ParallelBeamGeometry, operator_from_spec
    from lifted_inverse.operators.analytic import (
        ellipse_image,
        ellipse_sinogram,
        shepp_logan_ellipses,
    )
    from lifted_inverse.operators.geometry import fan_detectors

    ell = shepp_logan_ellipses(0.45 * size)
    geoms = {"parallel (180 angles over π)": ParallelBeamGeometry(size, 180),
             "fan (360 angles over 2π, 2N/2N)": FanBeamGeometry(
                 size, 360, fan_detectors(size, 2.0, 2.0 * size, 2.0 * size), 2.0, 2.0 * size, 2.0 * size)}
    print(f"\nprojector vs exact line integrals, {size}x{size} (relative L2)")
    for name, g in geoms.items():
        op = Radon(geometry=g, method="matrix_free")
        errs = []
        for k in (0, 1, 2):
            y = op(ellipse_image(ell, size, smoothness=k))
            exact = ellipse_sinogram(ell, g, smoothness=k)
            errs.append(float((y - exact).norm() / exact.norm()))
        print(f"  {name:34s} " + "  ".join(f"k={k}: {e:.4%}" for k, e in enumerate(errs)))
    x = shepp_logan(size).reshape(1, 1, size, size).double()
    print(f"\nFBP (ramp) of the noiseless shepp_logan {size}x{size}, PSNR dB (data range 1)")
    specs = {"parallel, 360 angles over π": {"name": "ct", "n_angles": 360},
             "fan, 360 angles over 2π": {"name": "ct", "geometry": "fan", "n_angles": 360}}
    fan = operator_from_spec(specs["fan, 360 angles over 2π"], x.shape[1:]).geometry
    specs["fan, 360 angles short scan (Parker)"] = {
        "name": "ct", "geometry": "fan", "n_angles": 360,
        "angle_range": [0.0, math.pi + 2 * fan.fan_angle()]}
    for name, spec in specs.items():
        op = operator_from_spec(spec, x.shape[1:])
        print(f"  {name:38s} {float(psnr(op.fbp(op(x)), x, 1.0)):.2f}")


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
    p.add_argument("--batch-sweep", action="store_true", help="sparse path: ms per image vs batch size")
    p.add_argument("--fan", action="store_true", help="fan beam vs astra_cpu line_fanflat")
    p.add_argument("--referee", action="store_true", help="analytic referee errors and FBP PSNR")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.batch_sweep or args.fan or args.referee:
        if args.batch_sweep:
            batch_sweep(args.repeats or 31)
        if args.fan:
            fan_vs_astra(args.repeats or 5)
        if args.referee:
            referee()
        return
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
