"""``lifted-inverse invert``: recover a network's input from its noisy output.

Flow: model (``perceptron``, ``encoder``, ``resnet`` or a checkpoint PATH, e.g. ``lifted-inverse
train``'s ``OUT/checkpoint.pt``; of an autoencoder its encoder) + ground-truth image -> clean
output ``N(u†)``
-> noisy data ``f^δ`` at relative level ``--noise`` (Bregman noise, see
:mod:`lifted_inverse.inversion.noise`) -> lifted Bregman inversion and the two gradient baselines
(proximal gradient descent and Adam, backprop through N) with the same wall-clock budget ->
``DIR/metrics.json`` and ``DIR/inversion.png`` (ground truth | N's output | lifted | baseline),
written atomically. ``baseline_*`` keys refer to proximal gradient descent (the method's named
baseline), ``adam_*`` keys to Adam.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..runtime import checked_device

#: per-model defaults: image, size, a-priori constant c in α = c·δ, iterations, Adam learning rate,
#: and for deep models the lifted solver settings (``deep``; chosen on validation digits by
#: ``benchmarks/bench_inversion.py --tune`` for the encoder)
MODEL_DEFAULTS = {
    "perceptron": {"image": "camera", "size": 64, "c": 1.0, "iterations": 500, "lr": 3e-2},
    "encoder": {"image": "digit", "size": 16, "c": 0.05, "iterations": 150, "lr": 1e-2,
                "deep": {"accelerate": True, "weights": [100.0, 10.0, 1.0], "inner_u": 1, "inner_states": 3}},
    "resnet": {"image": "camera", "size": 32, "c": 0.05, "iterations": 200, "lr": 1e-2},
    "path": {"image": "camera", "size": None, "c": 0.05, "iterations": 300, "lr": 1e-2},
}
#: defaults of a checkpoint PATH that differ by the task it was trained on (the task's inputs)
TASK_DEFAULTS = {"digits-autoencoder": {"image": "digit"}}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "invert", help="invert a pretrained network from noisy outputs (lifted Bregman vs gradient)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="perceptron | encoder | resnet | PATH of a checkpoint (written by lifted-inverse "
                        "train or lifted_inverse.networks.save_checkpoint)")
    p.add_argument("--noise", type=float, default=0.05,
                   help="relative noise level ε: B_Ψ(f^δ, z†) = δ², δ = ε‖N(u†)‖/√2 (default 0.05)")
    p.add_argument("--alpha", default=None,
                   help="regularisation parameter, or 'discrepancy' (Morozov, τ=1.5); default: α = c·δ")
    p.add_argument("--regularizer", choices=("tv", "l2", "l1"), default="tv")
    p.add_argument("--image", default=None,
                   help="ground truth: a built-in image name, shepp_logan, or digit[:K] (held-out digit K)")
    p.add_argument("--size", type=int, default=None, help="image side (perceptron: input is size×size)")
    p.add_argument("--outputs", type=int, default=512, help="perceptron output dimension (default 512)")
    p.add_argument("--iterations", type=int, default=None,
                   help="lifted iterations (deep: sweeps); the baselines get the same wall-clock time")
    p.add_argument("--seed", type=int, default=0, help="seed of the model weights and of the noise")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None, help="keep trained encoder/resnet weights here")
    p.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _ground_truth(name: str, size: int, seed: int) -> torch.Tensor:
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
    from .reconstruct import load_named_image

    return load_named_image(name, size, seed)


def _load_model(args):
    from ..inversion import pretrained

    name = args.model
    if name in ("perceptron", "encoder", "resnet"):
        defaults = MODEL_DEFAULTS[name]
        size = args.size or defaults["size"]
        if name == "perceptron":
            model = pretrained.perceptron(size, args.outputs, seed=args.seed)
        elif name == "encoder":
            if size != 16:
                raise ValueError(f"size: the encoder takes 16x16 digits, got --size {size}")
            model = pretrained.encoder(seed=args.seed, cache_dir=args.cache_dir)
        else:
            model = pretrained.resnet(seed=args.seed, cache_dir=args.cache_dir)
        return model, (1, size, size), defaults
    model, input_shape, task = _checkpoint_network(name)
    defaults = {**MODEL_DEFAULTS["path"], **TASK_DEFAULTS.get(task, {})}
    if args.size is not None and args.size != input_shape[1]:
        raise ValueError(f"size: the checkpoint expects {input_shape[1]}x{input_shape[1]} inputs")
    return model.requires_grad_(False), input_shape, defaults


def _checkpoint_network(path: str) -> tuple[torch.nn.Module, tuple[int, int, int], str | None]:
    """``(network to invert, (1, H, H), task name)`` of a checkpoint: an ``nn.Sequential``, or
    the encoder of an autoencoder (:attr:`Checkpoint.encoder`). Vector inputs of ``n = H²``
    entries are inverted as H×H gray images (a Flatten in front)."""
    from ..networks.checkpoint import load_checkpoint

    ck = load_checkpoint(path, what="--model")
    model, shape = ck.encoder, ck.input_shape
    if model is None:
        raise ValueError(f"--model: {path} stores no network architecture (a training checkpoint of "
                         "an earlier version: weights and trainer state only)")
    if ck.architecture["type"] != "Sequential":
        raise ValueError(f"--model: {path} holds a {ck.architecture['type']} network, a reconstructor "
                         "of (y, A) pairs; invert inverts feed-forward nn.Sequential networks")
    if shape is None:
        raise ValueError(f"--model: {path} does not record the network's input shape")
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if side > 0 and side * side == shape[0]:
        model, shape = torch.nn.Sequential(torch.nn.Flatten(), *model), (1, side, side)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise ValueError(f"--model: the CLI inverts gray square images (1, H, H) or vectors of H² "
                         f"entries; {path} takes inputs of shape {tuple(shape)}")
    return model, tuple(shape), ck.task


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


def run(args: argparse.Namespace) -> int:
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

    if not args.noise >= 0:
        raise ValueError(f"noise: expected a non-negative relative level, got {args.noise}")
    device = checked_device(args.device, "--device")
    model, input_shape, defaults = _load_model(args)
    model = model.to(device)
    iterations = args.iterations or defaults["iterations"]
    truth = _ground_truth(args.image or defaults["image"], input_shape[-1], args.seed)[None].to(device)
    net = lift(model, input_shape)  # raises a clear error for layers without a lifted form
    with torch.no_grad():
        z_true = net.output_pre_activation(truth)
        clean = net.output_layer.activation(z_true)
        delta = float(relative_delta(clean, args.noise))
        f = bregman_noise(net.output_layer.activation, z_true, delta, seed=args.seed + 1)
    noise_norm = float(torch.linalg.vector_norm(f - clean))
    u0 = torch.full_like(truth, 0.5)  # mid-grey: u = 0 is a stationary point of ReLU backprop
    common = {"input_shape": input_shape, "bounds": (0.0, 1.0), "progress": args.progress, "tol": 1e-7}

    # deep: 3+3 inner steps per sweep, inner Bregman weights tightened 1 -> 10 over a third of the run
    # (ρ = 10 on residual couplings: ρ = 1 leaves the ResNet relaxation too loose, 25 vs 33 dB)
    deep = {"inner_u": 3, "inner_states": 3, "rho": 10.0,
                "weights": continuation(len(net.blocks), 10.0, max(iterations // 3, 1))}
    deep.update(defaults.get("deep", {}))

    def lifted(alpha, previous=None):
        start = previous.u if previous is not None else u0
        return invert(net, f, alpha, args.regularizer, u0=start, iterations=iterations, **deep,
                      **{k: v for k, v in common.items() if k != "input_shape"})

    choice = {}
    if args.alpha is None:
        alpha = defaults["c"] * delta
        choice = {"alpha_rule": f"a priori alpha = {defaults['c']} * delta"}
        result = lifted(alpha)
    elif str(args.alpha).lower() == "discrepancy":
        dp = discrepancy_principle(lifted, lambda u: net.forward_states(u)[-1], f, noise_norm, tau=1.5,
                                   alpha0=4.0 * defaults["c"] * delta, q=0.5, max_steps=12)
        alpha, result = dp.alpha, dp.result
        choice = {"alpha_rule": "discrepancy principle (tau=1.5, geometric factor 0.5)",
                  "discrepancy_satisfied": dp.satisfied, "alphas_tried": dp.alphas,
                  "residuals": dp.residuals}
    else:
        try:
            alpha = float(args.alpha)
        except ValueError:
            raise ValueError(f"alpha: expected a number or 'discrepancy', got {args.alpha!r}") from None
        choice = {"alpha_rule": "given"}
        result = lifted(alpha)

    # equal wall-clock budget: each baseline runs until it has used the lifted solver's time
    # (or converged, or 50x the lifted iterations)
    budget = {"iterations": 50 * max(result.iterations, 1), "time_limit": max(result.seconds, 1e-3)}
    gd = invert_gradient(model, f, alpha, args.regularizer, method="gd", u0=u0, lr=1e-3,
                         **budget, **common)
    adam = invert_gradient(model, f, alpha, args.regularizer, method="adam", u0=u0, lr=defaults["lr"],
                           **budget, **common)

    def quality(u):
        p = float(psnr(u[0], truth[0], 1.0))
        try:
            s = float(ssim(u[0], truth[0], 1.0))
        except ValueError:
            s = math.nan
        return p, s

    lp, ls = quality(result.u)
    gp, gs = quality(gd.u)
    ap, as_ = quality(adam.u)
    metrics = {
        "model": args.model, "input_shape": list(input_shape), "image": args.image or defaults["image"],
        "regularizer": args.regularizer, "noise_level": args.noise, "delta": delta,
        "noise_norm": noise_norm, "alpha": alpha, **choice,
        "psnr": lp, "ssim": ls, "seconds": result.seconds, "iterations": result.iterations,
        "lifted_method": result.method,
        "baseline_psnr": gp, "baseline_ssim": gs, "baseline_seconds": gd.seconds,
        "baseline_method": gd.method, "baseline_iterations": gd.iterations,
        "adam_psnr": ap, "adam_ssim": as_, "adam_seconds": adam.seconds, "adam_lr": defaults["lr"],
        "adam_iterations": adam.iterations,
        "device": str(device),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_reconstructions(
        truth[0], _as_panel(f[0]),
        {f"lifted ({result.seconds:.2f}s)": result.u[0], f"gradient descent ({gd.seconds:.2f}s)": gd.u[0]},
        out / "inversion.png", data_range=1.0,
        title=f"{args.model}: noisy output f^δ (ε={args.noise:g}), α={alpha:.3g}",
    )
    print(f"lifted PSNR {lp:.2f} dB ({result.seconds:.2f}s) | gradient descent {gp:.2f} dB "
          f"({gd.seconds:.2f}s) | Adam {ap:.2f} dB ({adam.seconds:.2f}s) -> {out}")
    return 0
