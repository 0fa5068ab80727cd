"""The ``reconstruct`` job: simulate a measurement of one image and reconstruct it.

Flow: image -> operator + Gaussian noise -> measurement ``y`` -> solver (``METHODS[name]``) ->
``OUT/metrics.json``, ``OUT/reconstruction.png``, ``OUT/result.h5`` (all written atomically).
``metrics.json`` holds the quality figures and ``config``: every option after defaults, with its
source. An option that does not apply to the chosen operator and method is a ``ValueError``
naming it (``angles`` without CT, ``filter`` without FBP, ``checkpoint`` without ``unrolled``,
``alpha`` / ``iterations`` / ``tol`` / ``progress`` without an iterative solver).
A new method is one entry in :data:`METHODS`: ``func(operator, y, config, context) -> (x, info)``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..datasets.hdf5 import describe_noise, operator_record, write_arrays
from ..io import atomic_write_text
from ..operators.base import LinearOperator
from ..runtime import checked_device
from ._common import check_min, config_record, load_named_image, noise_rule, refuse

OPERATORS = ("denoise", "blur", "ct")
ITERATIVE = ("tikhonov", "tv")
#: values of the options left unset (None); ``noise`` follows :func:`noise_rule`, ``alpha``
#: :func:`lifted_inverse.reconstruction.default_alpha`
DEFAULTS = {"operator": "ct", "method": "tv", "image": "shepp_logan", "size": 128, "noise_type": "auto",
            "seed": 0, "device": "cpu", "iterations": 300, "tol": 1e-5, "angles": 60, "filter": "ramp",
            "progress": True}


@dataclass
class ReconstructOptions:
    """Options of one reconstruction; None takes :data:`DEFAULTS` where the option applies."""
    operator: str | None = None
    method: str | None = None
    image: str | None = None
    size: int | None = None
    noise: float | None = None
    noise_type: str | None = None
    alpha: float | None = None
    iterations: int | None = None
    tol: float | None = None
    seed: int | None = None
    angles: int | None = None
    filter: str | None = None
    checkpoint: str | Path | None = None
    device: str | None = None
    progress: bool | None = None


def build_operator(name: str, shape, angles: int | None = None) -> LinearOperator:
    """The registry's operator ``name`` for images of ``shape`` (``angles``: the CT angle count)."""
    from ..operators.registry import make_operator

    options = {"n_angles": angles} if name == "ct" and angles is not None else {}
    return make_operator(name, shape, **options)


def resolve(options: ReconstructOptions) -> dict:
    """Every option after defaults (``noise`` and ``noise_relative`` by :func:`noise_rule`);
    raises ``ValueError`` naming an option that is out of range or does not apply."""
    def get(k):
        return DEFAULTS.get(k) if getattr(options, k) is None else getattr(options, k)

    operator, method = get("operator"), get("method")
    if operator not in OPERATORS:
        raise ValueError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(sorted(METHODS))}, got {method!r}")
    if method == "fbp" and operator != "ct":
        raise ValueError(f"method: fbp only for --operator ct, got --operator {operator}")
    if operator != "ct":
        refuse(options, ("angles",), f"the number of CT angles; --operator {operator} has none")
    if method != "fbp":
        refuse(options, ("filter",), f"the FBP filter; --method {method} does not filter")
    if method != "unrolled":
        refuse(options, ("checkpoint",), f"a trained network for --method unrolled, not {method}")
    elif options.checkpoint is None:
        raise ValueError("checkpoint: --method unrolled needs a trained network (lifted-inverse train "
                         "--task pnn-denoise|unrolled-deblur|unrolled-ct writes OUT/checkpoint.pt)")
    if method not in ITERATIVE:
        refuse(options, ("alpha", "iterations", "tol", "progress"),
               f"an option of the iterative solvers ({', '.join(ITERATIVE)}), not of --method {method}")
    check_min("size", options.size, 16)
    check_min("iterations", options.iterations, 1)
    check_min("angles", options.angles, 1)
    check_min("alpha", options.alpha, 0)
    if options.tol is not None and not options.tol > 0:
        raise ValueError(f"tol: expected > 0, got {options.tol}")
    level, relative = noise_rule(operator, options.noise, get("noise_type"))
    keep = {"operator": operator, "method": method, "noise": level, "noise_relative": relative}
    for k in ("image", "size", "noise_type", "seed", "device"):
        keep[k] = get(k)
    if operator == "ct":
        keep["angles"] = get("angles")
    if method == "fbp":
        keep["filter"] = get("filter")
    if method in ITERATIVE:
        keep.update(iterations=get("iterations"), tol=get("tol"), progress=get("progress"))
    return keep


def _load_unrolled(path, operator: str) -> tuple:
    """``(network, header)`` of the checkpoint for ``--method unrolled`` (read once), a network
    trained for ``operator``."""
    from ..networks.checkpoint import load_checkpoint

    ck = load_checkpoint(path, what="--checkpoint")
    kind = (ck.architecture or {}).get("type")
    if kind not in ("pnn", "unrolled"):
        held = f"a {kind} network" if kind else "no network architecture"
        raise ValueError(f"checkpoint: {path} holds {held}; --method unrolled applies a PNN "
                         "or unrolled network (lifted-inverse train --task pnn-denoise|unrolled-deblur|"
                         "unrolled-ct)")
    if ck.operator is None:
        raise ValueError(f"checkpoint: {path} does not record the operator the network was trained for")
    trained_for = ck.operator.get("name")
    if trained_for != operator:
        raise ValueError(f"operator: the checkpoint was trained for {trained_for!r}, got {operator!r}")
    return ck.model, {"task": ck.task, "kind": kind, "operator": ck.operator}


def _operator(cfg: dict, shape, loaded: tuple | None) -> LinearOperator:
    """The operator of ``cfg``; for ``--method unrolled`` on CT the scanner the network was
    trained for (its detector count, from the checkpoint's CT spec) with ``angles`` angles."""
    if loaded is not None and cfg["operator"] == "ct":
        from ..operators.registry import operator_from_spec, resolve_spec

        geometry = resolve_spec(loaded[1]["operator"], shape)
        geometry.pop("angles", None)  # the given angle count, uniform in the trained range
        return operator_from_spec({**geometry, "n_angles": cfg["angles"]}, shape)
    return build_operator(cfg["operator"], shape, cfg.get("angles"))


def _alpha(options, operator, context, method: str) -> float:
    if options.alpha is not None:
        return float(options.alpha)
    from ..reconstruction import default_alpha

    return default_alpha(operator, context["noise_std"], method)


def _run_fbp(operator, y, cfg, context):
    from ..reconstruction import fbp

    return fbp(operator, y, filter=cfg["filter"]), {"filter": cfg["filter"]}


def _run_tikhonov(operator, y, cfg, context):
    from ..reconstruction import tikhonov_cg

    alpha = _alpha(context["options"], operator, context, "tikhonov")
    res = tikhonov_cg(operator, y, alpha, regulariser="gradient", max_iter=cfg["iterations"],
                      tol=cfg["tol"], progress=cfg["progress"])
    return res.x, {"alpha": alpha, "regulariser": "gradient", "iterations": res.iterations,
                   "converged": res.converged}


def _run_tv(operator, y, cfg, context):
    from ..reconstruction import tv_pdhg

    alpha = _alpha(context["options"], operator, context, "tv")
    res = tv_pdhg(operator, y, alpha, nonneg=True, max_iter=cfg["iterations"], tol=cfg["tol"],
                  progress=cfg["progress"])
    return res.x, {"alpha": alpha, "nonneg": True, "iterations": res.iterations,
                   "converged": res.converged, "final_energy": res.history["energy"][-1]}


def _run_unrolled(operator, y, cfg, context):
    net, ck = context["network"]
    net = net.to(dtype=y.dtype, device=y.device)
    with torch.no_grad():
        x = net(y) if ck["kind"] == "pnn" else net(y, operator)
    return x, {"checkpoint": str(context["options"].checkpoint), "task": ck["task"], "network": ck["kind"]}


#: method name -> ``func(operator, y, config, context) -> (x, info)``; ``config`` is
#: :func:`resolve`'s dict, ``context`` holds ``options``, ``noise_std`` (absolute) and ``network``
#: (``(net, header)`` of the checkpoint for ``unrolled``, else None).
METHODS: dict[str, Callable] = {"fbp": _run_fbp, "tikhonov": _run_tikhonov, "tv": _run_tv,
                                "unrolled": _run_unrolled}


def plan_reconstruction(options: ReconstructOptions) -> dict:
    """The ``config`` record a run would write (every option after defaults, with its source),
    after the checks a run makes before reconstructing (options, device, checkpoint)."""
    cfg = resolve(options)
    checked_device(cfg["device"], "--device")
    if cfg["method"] == "unrolled":
        _load_unrolled(options.checkpoint, cfg["operator"])
    return config_record(options, cfg)


def run_reconstruction(options: ReconstructOptions, out: str | Path) -> dict:
    """Simulate, reconstruct and write ``out`` (module docstring); returns the metrics."""
    from ..metrics import psnr, ssim
    from ..operators.noise import GaussianNoise
    from ..plotting import plot_reconstructions

    cfg = resolve(options)
    device = checked_device(cfg["device"], "--device")
    x = load_named_image(cfg["image"], cfg["size"], cfg["seed"])[None].to(dtype=torch.float64, device=device)
    loaded = _load_unrolled(options.checkpoint, cfg["operator"]) if cfg["method"] == "unrolled" else None
    operator = _operator(cfg, x.shape[1:], loaded)
    noise = GaussianNoise(cfg["noise"], relative=cfg["noise_relative"], seed=cfg["seed"])
    with torch.no_grad():
        clean = operator(x)
        y = noise(clean)
    rms = float(clean.abs().pow(2).mean().sqrt())
    noise_std = cfg["noise"] * rms if cfg["noise_relative"] else cfg["noise"]
    context = {"options": options, "noise_std": noise_std, "network": loaded}
    start = time.perf_counter()
    rec, info = METHODS[cfg["method"]](operator, y, cfg, context)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    x, y, rec = x.cpu(), y.cpu(), rec.detach().to(dtype=x.dtype, device="cpu")
    config = config_record(options, {**cfg, "alpha": info.get("alpha")})
    metrics = {
        "psnr": float(psnr(rec, x, 1.0, reduction="mean")),
        "ssim": float(ssim(rec, x, 1.0, reduction="mean")),
        "seconds": seconds,
        "operator": cfg["operator"], "method": cfg["method"], "image": cfg["image"], "size": cfg["size"],
        "noise": cfg["noise"], "noise_relative": cfg["noise_relative"], "noise_std": noise_std,
        "seed": cfg["seed"], "device": str(device), "alpha": info.get("alpha"),
        **{k: v for k, v in info.items() if k != "alpha"},
    }
    if y.shape == x.shape:
        metrics["psnr_measurement"] = float(psnr(y, x, 1.0, reduction="mean"))
    metrics["config"] = config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_reconstructions(x[0], y[0], {cfg["method"]: rec[0]}, out / "reconstruction.png", data_range=1.0,
                         title=f"{cfg['operator']} / {cfg['image']}")
    write_arrays(out / "result.h5",
                 {"ground_truth": x[0], "measurement": y[0], "reconstruction": rec[0]},
                 {"operator": operator_record(operator), "noise": describe_noise(noise),
                  "metrics": metrics})
    return metrics
