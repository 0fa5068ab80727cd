"""``lifted-inverse reconstruct``: simulate a measurement of one image and reconstruct it.

Flow: image -> operator + Gaussian noise -> measurement -> solver (``METHODS[name]``) ->
``DIR/metrics.json``, ``DIR/reconstruction.png``, ``DIR/result.h5`` (all written atomically).
A new method is one entry in :data:`METHODS`: ``func(operator, y, args, context) -> (x, info)``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..datasets import builtin_image, ellipse_phantom, load_image, shepp_logan
from ..datasets.hdf5 import describe_noise, operator_record, write_arrays
from ..io import atomic_write_text
from ..operators.base import LinearOperator
from ..runtime import checked_device

OPERATORS = ("denoise", "blur", "ct")


def load_named_image(name: str, size: int, seed: int = 0) -> torch.Tensor:
    """``shepp_logan``, ``ellipses`` (seeded), a built-in scikit-image name or an image file path,
    as a gray (1, size, size) tensor in [0, 1]."""
    key = name.lower().replace("-", "_")
    if key in ("shepp_logan", "shepp_logan_phantom"):
        return shepp_logan(size)
    if key in ("ellipses", "ellipse"):
        return ellipse_phantom(0, size, seed)
    path = Path(name)
    if path.suffix or path.exists() or "/" in name:
        return load_image(path, size, gray=True)
    return builtin_image(name, size, gray=True)


def build_operator(name: str, shape, angles: int | None = None) -> LinearOperator:
    """The registry's operator ``name`` for images of ``shape`` (``angles``: the CT angle count)."""
    from ..operators.registry import make_operator

    options = {"n_angles": angles} if name == "ct" and angles is not None else {}
    return make_operator(name, shape, **options)


def _load_unrolled(args) -> tuple | None:
    """``(network, header)`` of ``--checkpoint`` for ``--method unrolled`` (read once); None for
    the other methods."""
    if args.method != "unrolled":
        return None
    if args.checkpoint is None:
        raise ValueError("--checkpoint: --method unrolled needs a trained network (lifted-inverse train "
                         "--task pnn-denoise|unrolled-deblur|unrolled-ct writes OUT/checkpoint.pt)")
    from ..networks.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint, what="--checkpoint")
    kind = (ck.architecture or {}).get("type")
    if kind not in ("pnn", "unrolled"):
        held = f"a {kind} network" if kind else "no network architecture"
        raise ValueError(f"--checkpoint: {args.checkpoint} holds {held}; --method unrolled applies a PNN "
                         "or unrolled network (lifted-inverse train --task pnn-denoise|unrolled-deblur|"
                         "unrolled-ct)")
    if ck.operator is None:
        raise ValueError(f"--checkpoint: {args.checkpoint} does not record the operator the network "
                         "was trained for")
    return ck.model, {"task": ck.task, "kind": kind, "operator": ck.operator}


def _checkpoint_geometry(args, shape, loaded: tuple | None) -> LinearOperator | None:
    """``--method unrolled`` on CT: the scanner the network was trained for (its detector count,
    from the checkpoint) with ``--angles`` angles; None otherwise."""
    if loaded is None or args.operator != "ct":
        return None
    from ..operators.registry import operator_from_spec, resolve_spec

    spec = loaded[1]["operator"]
    if not spec or spec.get("name") != "ct":
        return None  # _run_unrolled names the mismatch
    geometry = resolve_spec(spec, shape)
    geometry.pop("angles", None)  # --angles angles, uniform in the trained range
    return operator_from_spec({**geometry, "n_angles": args.angles}, shape)


def _alpha(args, operator, context, method: str) -> float:
    if args.alpha is not None:
        return float(args.alpha)
    from ..reconstruction import default_alpha

    return default_alpha(operator, context["noise_std"], method)


def _run_fbp(operator, y, args, context):
    from ..reconstruction import fbp

    if not hasattr(operator, "fbp"):
        raise ValueError(f"method: 'fbp' needs --operator ct, got --operator {args.operator}")
    return fbp(operator, y, filter=args.filter), {"filter": args.filter}


def _run_tikhonov(operator, y, args, context):
    from ..reconstruction import tikhonov_cg

    alpha = _alpha(args, operator, context, "tikhonov")
    res = tikhonov_cg(operator, y, alpha, regulariser="gradient", max_iter=args.iterations,
                      tol=args.tol, progress=context["progress"])
    return res.x, {"alpha": alpha, "regulariser": "gradient", "iterations": res.iterations,
                   "converged": res.converged}


def _run_tv(operator, y, args, context):
    from ..reconstruction import tv_pdhg

    alpha = _alpha(args, operator, context, "tv")
    res = tv_pdhg(operator, y, alpha, nonneg=True, max_iter=args.iterations, tol=args.tol,
                  progress=context["progress"])
    return res.x, {"alpha": alpha, "nonneg": True, "iterations": res.iterations,
                   "converged": res.converged, "final_energy": res.history["energy"][-1]}


def _run_unrolled(operator, y, args, context):
    net, ck = context["network"]
    trained_for = ck["operator"]["name"]
    if trained_for != args.operator:
        raise ValueError(f"--operator: the checkpoint was trained for {trained_for!r}, got {args.operator!r}")
    net = net.to(dtype=y.dtype, device=y.device)
    with torch.no_grad():
        x = net(y) if ck["kind"] == "pnn" else net(y, operator)
    return x, {"checkpoint": str(args.checkpoint), "task": ck["task"], "network": ck["kind"]}


#: method name -> ``func(operator, y, args, context) -> (x, info)``; ``context`` holds
#: ``noise_std`` (absolute), ``progress``, ``ground_truth`` (for reporting only) and ``network``
#: (``(net, header)`` of ``--checkpoint`` for ``unrolled``, else None).
METHODS: dict[str, Callable] = {"fbp": _run_fbp, "tikhonov": _run_tikhonov, "tv": _run_tv,
                                "unrolled": _run_unrolled}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct", help="simulate a measurement of an image and reconstruct it",
        description="Simulate y = A x + noise for one image and reconstruct x. Writes "
        "OUT/metrics.json, OUT/reconstruction.png and OUT/result.h5.")
    p.add_argument("--operator", choices=OPERATORS, default="ct")
    p.add_argument("--method", choices=sorted(METHODS), default="tv")
    p.add_argument("--image", default="shepp_logan",
                   help="shepp_logan, ellipses, a scikit-image name (camera, ...) or an image file")
    p.add_argument("--noise", type=float, default=None,
                   help="Gaussian noise level: relative to rms(Ax) for ct (default 0.01), "
                        "absolute for images in [0, 1] otherwise (default 0.1)")
    p.add_argument("--noise-type", choices=("auto", "absolute", "relative"), default="auto",
                   help="auto: relative for ct, absolute otherwise")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--size", type=int, default=128, help="image side length (default 128)")
    p.add_argument("--alpha", type=float, default=None,
                   help="regularisation weight (default: the noise-level rule of "
                        "lifted_inverse.reconstruction.default_alpha)")
    p.add_argument("--iterations", type=int, default=300, help="maximum iterations")
    p.add_argument("--tol", type=float, default=1e-5, help="stopping tolerance")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--angles", type=int, default=60, help="CT: number of angles in [0, pi)")
    p.add_argument("--filter", default="ramp", help="FBP filter: ramp, shepp-logan, hann")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="--method unrolled: network checkpoint written by lifted-inverse train")
    p.add_argument("--device", default="cpu", help="run the reconstruction on this device (e.g. cuda)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..metrics import psnr, ssim
    from ..operators.noise import GaussianNoise
    from ..plotting import plot_reconstructions

    if args.size < 16:
        raise ValueError(f"--size: expected >= 16, got {args.size}")
    if args.iterations < 1:
        raise ValueError(f"--iterations: expected >= 1, got {args.iterations}")
    if args.alpha is not None and not args.alpha >= 0:
        raise ValueError(f"--alpha: expected >= 0, got {args.alpha}")
    if args.angles < 1:
        raise ValueError(f"--angles: expected >= 1, got {args.angles}")
    relative = args.noise_type == "relative" or (args.noise_type == "auto" and args.operator == "ct")
    level = args.noise if args.noise is not None else (0.01 if relative else 0.1)
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"--noise: expected a finite level >= 0, got {level}")
    if args.method == "fbp" and args.operator != "ct":
        raise ValueError(f"--method fbp: only for --operator ct, got --operator {args.operator}")

    device = checked_device(args.device, "--device")
    x = load_named_image(args.image, args.size, args.seed)[None].to(dtype=torch.float64, device=device)
    loaded = _load_unrolled(args)
    operator = _checkpoint_geometry(args, x.shape[1:], loaded) or build_operator(args.operator, x.shape[1:], args.angles)
    noise = GaussianNoise(level, relative=relative, seed=args.seed)
    with torch.no_grad():
        clean = operator(x)
        y = noise(clean)
    rms = float(clean.abs().pow(2).mean().sqrt())
    context = {"noise_std": level * rms if relative else level, "progress": args.progress,
               "ground_truth": x, "network": loaded}
    start = time.perf_counter()
    rec, info = METHODS[args.method](operator, y, args, context)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    x, y, rec = x.cpu(), y.cpu(), rec.detach().to(dtype=x.dtype, device="cpu")
    metrics = {
        "psnr": float(psnr(rec, x, 1.0, reduction="mean")),
        "ssim": float(ssim(rec, x, 1.0, reduction="mean")),
        "seconds": seconds,
        "operator": args.operator, "method": args.method, "image": args.image, "size": args.size,
        "noise": level, "noise_relative": relative, "noise_std": context["noise_std"],
        "seed": args.seed, "device": str(device), "alpha": info.get("alpha"),
        **{k: v for k, v in info.items() if k != "alpha"},
    }
    if y.shape == x.shape:
        metrics["psnr_measurement"] = float(psnr(y, x, 1.0, reduction="mean"))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_reconstructions(x[0], y[0], {args.method: rec[0]}, out / "reconstruction.png", data_range=1.0,
                         title=f"{args.operator} / {args.image}")
    write_arrays(out / "result.h5",
                 {"ground_truth": x[0], "measurement": y[0], "reconstruction": rec[0]},
                 {"operator": operator_record(operator), "noise": describe_noise(noise),
                  "metrics": metrics})
    print(f"{args.method} on {args.operator}/{args.image}: PSNR {metrics['psnr']:.2f} dB, "
          f"SSIM {metrics['ssim']:.4f}, {seconds:.2f} s -> {out}")
    return 0
