"""The ``invert`` job: recover a network's input from its noisy output.

Flow: model (``perceptron``, ``encoder``, ``resnet`` or a checkpoint PATH, e.g. ``lifted-inverse
train``'s ``OUT/checkpoint.pt``; of an autoencoder its encoder) + ground-truth image -> clean
output ``N(u†)`` -> noisy data ``f^δ`` at relative level ``noise`` (Bregman noise, see
:mod:`lifted_inverse.inversion.noise`) -> lifted Bregman inversion and the two gradient baselines
(proximal gradient descent and Adam, backprop through N) with the same wall-clock budget ->
``OUT/metrics.json`` and ``OUT/inversion.png`` (ground truth | N's output | lifted | baseline),
written atomically. ``baseline_*`` keys refer to proximal gradient descent (the method's named
baseline), ``adam_*`` keys to Adam; ``config`` holds every option after defaults and its source.
An option that does not apply to the chosen model is a ``ValueError`` naming it (``outputs``
outside the perceptron, ``cache_dir`` outside the encoder and resnet, a ``size`` the model
cannot take).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime import checked_device
from ._common import check_min, config_record, load_named_image, refuse

BUILTIN_MODELS = ("perceptron", "encoder", "resnet")
#: per-model defaults: image, size, a-priori constant c in α = c·δ, iterations, Adam learning rate,
#: and for deep models the lifted solver settings (``deep``; chosen on validation digits by
#: ``benchmarks/bench_inversion.py --tune`` for the encoder)
MODEL_DEFAULTS = {
    "perceptron": {"image": "camera", "size": 64, "c": 1.0, "iterations": 500, "lr": 3e-2, "outputs": 512},
    "encoder": {"image": "digit", "size": 16, "c": 0.05, "iterations": 150, "lr": 1e-2,
                "deep": {"accelerate": True, "weights": [100.0, 10.0, 1.0], "inner_u": 1, "inner_states": 3}},
    "resnet": {"image": "camera", "size": 32, "c": 0.05, "iterations": 200, "lr": 1e-2},
    "path": {"image": "camera", "size": None, "c": 0.05, "iterations": 300, "lr": 1e-2},
}
#: defaults of a checkpoint PATH that differ by the task it was trained on (the task's inputs)
TASK_DEFAULTS = {"digits-autoencoder": {"image": "digit"}}
REGULARIZERS = ("tv", "l2", "l1")
#: defaults of the options every model takes
DEFAULTS = {"noise": 0.05, "regularizer": "tv", "seed": 0, "device": "cpu", "progress": False}


@dataclass
class InvertOptions:
    """Options of one inversion; None takes :data:`DEFAULTS` or the model's :data:`MODEL_DEFAULTS`.
    ``alpha``: a number, ``"discrepancy"`` (Morozov, τ = 1.5) or None (α = c·δ)."""
    model: str
    noise: float | None = None
    alpha: float | str | None = None
    regularizer: str | None = None
    image: str | None = None
    size: int | None = None
    outputs: int | None = None
    iterations: int | None = None
    seed: int | None = None
    device: str | None = None
    cache_dir: str | None = None
    progress: bool | None = None


def _alpha_rule(alpha) -> float | str | None:
    if alpha is None or str(alpha).lower() == "discrepancy":
        return None if alpha is None else "discrepancy"
    try:
        value = float(alpha)
    except ValueError:
        raise ValueError(f"alpha: expected a number or 'discrepancy', got {alpha!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")
    return value


def resolve(options: InvertOptions, input_shape=None, task: str | None = None) -> dict:
    """Every option after defaults, for a checkpoint model given its ``input_shape`` and ``task``;
    raises ``ValueError`` naming an option out of range or not applying to the model."""
    builtin = options.model in BUILTIN_MODELS
    if options.model != "perceptron":
        refuse(options, ("outputs",), f"the perceptron's output dimension, not of --model {options.model}")
    if options.model not in ("encoder", "resnet"):
        refuse(options, ("cache_dir",), "the weights cache of the pretrained encoder and resnet, not of "
               f"--model {options.model}")
    check_min("size", options.size, 2)
    check_min("outputs", options.outputs, 1)
    check_min("iterations", options.iterations, 1)
    if options.noise is not None and not (math.isfinite(options.noise) and options.noise >= 0):
        raise ValueError(f"noise: expected a non-negative relative level, got {options.noise}")
    if options.regularizer is not None and options.regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer: expected one of {', '.join(REGULARIZERS)}, got {options.regularizer!r}")
    alpha = _alpha_rule(options.alpha)
    if builtin:
        defaults = MODEL_DEFAULTS[options.model]
        if options.model == "encoder" and options.size not in (None, 16):
            raise ValueError(f"size: the encoder takes 16x16 digits, got --size {options.size}")
    else:
        defaults = {**MODEL_DEFAULTS["path"], **TASK_DEFAULTS.get(task, {})}
        if options.size is not None and input_shape is not None and options.size != input_shape[1]:
            raise ValueError(f"size: the checkpoint expects {input_shape[1]}x{input_shape[1]} inputs")
        defaults = {**defaults, "size": None if input_shape is None else input_shape[1]}

    def get(k):
        value = getattr(options, k)
        return value if value is not None else DEFAULTS.get(k, defaults.get(k))

    cfg = {k: get(k) for k in ("noise", "regularizer", "seed", "device", "progress", "image", "size",
                                "iterations")}
    cfg.update(model=options.model, alpha=alpha, c=defaults["c"], adam_lr=defaults["lr"])
    if options.model == "perceptron":
        cfg["outputs"] = get("outputs")
    if options.model in ("encoder", "resnet"):
        cfg["cache_dir"] = options.cache_dir
    return cfg


def checkpoint_network(path: str) -> tuple[torch.nn.Module, tuple[int, int, int], str | None]:
    """``(network to invert, (1, H, H), task name)`` of a checkpoint: an ``nn.Sequential``, or
    the encoder of an autoencoder (:attr:`Checkpoint.encoder`). Vector inputs of ``n = H²``
    entries are inverted as H×H gray images (a Flatten in front)."""
    from ..networks.checkpoint import load_checkpoint

    ck = load_checkpoint(path, what="--model")
    model, shape = ck.encoder, ck.input_shape
    if model is None:
        raise ValueError(f"model: {path} stores no network architecture (a training checkpoint of "
                         "an earlier version: weights and trainer state only)")
    if ck.architecture["type"] != "Sequential":
        raise ValueError(f"model: {path} holds a {ck.architecture['type']} network, a reconstructor "
                         "of (y, A) pairs; invert inverts feed-forward nn.Sequential networks")
    if shape is None:
        raise ValueError(f"model: {path} does not record the network's input shape")
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if side > 0 and side * side == shape[0]:
        model, shape = torch.nn.Sequential(torch.nn.Flatten(), *model), (1, side, side)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise ValueError(f"model: the CLI inverts gray square images (1, H, H) or vectors of H² "
                         f"entries; {path} takes inputs of shape {tuple(shape)}")
    return model, tuple(shape), ck.task


def _model(cfg: dict) -> torch.nn.Module:
    """The built-in model of a resolved config (the encoder and resnet are trained on first use,
    cached in ``cache_dir``)."""
    from ..inversion import pretrained

    if cfg["model"] == "perceptron":
        return pretrained.perceptron(cfg["size"], cfg["outputs"], seed=cfg["seed"])
    if cfg["model"] == "encoder":
        return pretrained.encoder(seed=cfg["seed"], cache_dir=cfg["cache_dir"])
    return pretrained.resnet(seed=cfg["seed"], cache_dir=cfg["cache_dir"])


def ground_truth(name: str, size: int, seed: int) -> torch.Tensor:
    """``digit[:K]`` (held-out digit K, default index ``seed``, resized to ``size``) or any
    name of :func:`~lifted_inverse.jobs._common.load_named_image`, as ``(1, size, size)``."""
    from ..inversion.pretrained import digits

    key = name.lower()
    if key.startswith("digit"):
        index = int(key.split(":", 1)[1]) if ":" in key else seed
        images = digits("test")
        if not 0 <= index < images.shape[0]:
            raise ValueError(f"image: digit index must be in [0, {images.shape[0]}), got {index}")
        img = images[index]
        if size != img.shape[-1]:
            img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear",
                                                  align_corners=False)[0].clamp(0, 1)
        return img
    return load_named_image(name, size, seed)


def _as_panel(t: torch.Tensor) -> torch.Tensor:
    """Network output as a gray image: images stay, vectors are folded into a near-square array."""
    t = t.detach().cpu()
    if t.ndim == 3 and t.shape[0] in (1, 3):
        return t
    n = t.numel()
    h = int(math.sqrt(n))
    while n % h:
        h -= 1
    return t.reshape(1, h, n // h)


def _load(options: InvertOptions) -> tuple[dict, torch.nn.Module | None, tuple | None]:
    """``(config, checkpoint network or None, its input shape or None)``."""
    if options.model in BUILTIN_MODELS:
        return resolve(options), None, None
    model, input_shape, task = checkpoint_network(options.model)
    return resolve(options, input_shape, task), model.requires_grad_(False), input_shape


def plan_inversion(options: InvertOptions) -> dict:
    """The ``config`` record a run would write, after the checks it makes before inverting (a
    checkpoint is read; the built-in encoder and resnet are not trained)."""
    cfg, _, _ = _load(options)
    checked_device(cfg["device"], "--device")
    return config_record(options, cfg)


def run_inversion(options: InvertOptions, out: str | Path) -> dict:
    """Invert, compare with the gradient baselines and write ``out`` (module docstring);
    returns the metrics."""
    from ..inversion import (
        continuation,
        discrepancy_principle,
        invert,
        invert_gradient,
        relative_delta,
    )
    from ..inversion.noise import bregman_noise
    from ..io import atomic_write_text
    from ..lifted import lift
    from ..metrics import psnr, ssim
    from ..plotting import plot_reconstructions

    cfg, model, input_shape = _load(options)
    device = checked_device(cfg["device"], "--device")
    if model is None:
        model, input_shape = _model(cfg), (1, cfg["size"], cfg["size"])
    model = model.to(device)
    iterations, seed, regularizer, progress = cfg["iterations"], cfg["seed"], cfg["regularizer"], cfg["progress"]
    truth = ground_truth(cfg["image"], input_shape[-1], seed)[None].to(device)
    net = lift(model, input_shape)  # raises a clear error for layers without a lifted form
    with torch.no_grad():
        z_true = net.output_pre_activation(truth)
        clean = net.output_layer.activation(z_true)
        delta = float(relative_delta(clean, cfg["noise"]))
        f = bregman_noise(net.output_layer.activation, z_true, delta, seed=seed + 1)
    noise_norm = float(torch.linalg.vector_norm(f - clean))
    u0 = torch.full_like(truth, 0.5)  # mid-grey: u = 0 is a stationary point of ReLU backprop
    common = {"input_shape": input_shape, "bounds": (0.0, 1.0), "progress": progress, "tol": 1e-7}

    # deep: 3+3 inner steps per sweep, inner Bregman weights tightened 1 -> 10 over a third of the run
    # (ρ = 10 on residual couplings: ρ = 1 leaves the ResNet relaxation too loose)
    deep = {"inner_u": 3, "inner_states": 3, "rho": 10.0,
            "weights": continuation(len(net.blocks), 10.0, max(iterations // 3, 1))}
    deep.update(MODEL_DEFAULTS.get(cfg["model"], {}).get("deep", {}))

    def lifted(alpha, previous=None):
        start = previous.u if previous is not None else u0
        return invert(net, f, alpha, regularizer, u0=start, iterations=iterations, **deep,
                      **{k: v for k, v in common.items() if k != "input_shape"})

    c = cfg["c"]
    if cfg["alpha"] is None:
        alpha = c * delta
        choice = {"alpha_rule": f"a priori alpha = {c} * delta"}
        result = lifted(alpha)
    elif cfg["alpha"] == "discrepancy":
        dp = discrepancy_principle(lifted, lambda u: net.forward_states(u)[-1], f, noise_norm, tau=1.5,
                                   alpha0=4.0 * c * delta, q=0.5, max_steps=12)
        alpha, result = dp.alpha, dp.result
        choice = {"alpha_rule": "discrepancy principle (tau=1.5, geometric factor 0.5)",
                  "discrepancy_satisfied": dp.satisfied, "alphas_tried": dp.alphas,
                  "residuals": dp.residuals}
    else:
        alpha = cfg["alpha"]
        choice = {"alpha_rule": "given"}
        result = lifted(alpha)

    # equal wall-clock budget: each baseline runs until it has used the lifted solver's time
    # (or converged, or 50x the lifted iterations)
    budget = {"iterations": 50 * max(result.iterations, 1), "time_limit": max(result.seconds, 1e-3)}
    gd = invert_gradient(model, f, alpha, regularizer, method="gd", u0=u0, lr=1e-3, **budget, **common)
    adam = invert_gradient(model, f, alpha, regularizer, method="adam", u0=u0, lr=cfg["adam_lr"],
                           **budget, **common)

    def quality(u):
        p = float(psnr(u[0], truth[0], 1.0))
        try:
            s = float(ssim(u[0], truth[0], 1.0))
        except ValueError:  # images below SSIM's window size
            s = math.nan
        return p, s

    lp, ls = quality(result.u)
    gp, gs = quality(gd.u)
    ap, as_ = quality(adam.u)
    metrics = {
        "model": cfg["model"], "input_shape": list(input_shape), "image": cfg["image"],
        "regularizer": regularizer, "noise_level": cfg["noise"], "delta": delta,
        "noise_norm": noise_norm, "alpha": alpha, **choice,
        "psnr": lp, "ssim": ls, "seconds": result.seconds, "iterations": result.iterations,
        "lifted_method": result.method,
        "baseline_psnr": gp, "baseline_ssim": gs, "baseline_seconds": gd.seconds,
        "baseline_method": gd.method, "baseline_iterations": gd.iterations,
        "adam_psnr": ap, "adam_ssim": as_, "adam_seconds": adam.seconds, "adam_lr": cfg["adam_lr"],
        "adam_iterations": adam.iterations,
        "device": str(device),
        "config": config_record(options, {**cfg, "size": input_shape[-1],
                                          "alpha": cfg["alpha"] if cfg["alpha"] == "discrepancy" else alpha}),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_reconstructions(
        truth[0], _as_panel(f[0]),
        {f"lifted ({result.seconds:.2f}s)": result.u[0], f"gradient descent ({gd.seconds:.2f}s)": gd.u[0]},
        out / "inversion.png", data_range=1.0,
        title=f"{cfg['model']}: noisy output f^δ (ε={cfg['noise']:g}), α={alpha:.3g}",
    )
    return metrics
