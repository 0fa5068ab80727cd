"""The ``invert`` job: recover a network's input from its output.

Flow: model -> data ``f^δ`` -> lifted Bregman inversion and the two gradient baselines (proximal
gradient descent and Adam, backprop through N) with the same wall-clock budget -> ``OUT/result.h5``
(the recovered inputs as data, with provenance), ``OUT/metrics.json`` and ``OUT/inversion.png``,
each written atomically. ``baseline_*`` keys refer to proximal gradient descent (the method's
named baseline), ``adam_*`` keys to Adam; ``config`` holds every option after defaults and its
source.

Models (``--model``): ``perceptron``, ``encoder``, ``resnet`` (built in); a checkpoint PATH
(``lifted-inverse train``'s ``OUT/checkpoint.pt`` or :func:`~lifted_inverse.networks.save_checkpoint`;
of an autoencoder its encoder); a ``torch.export`` archive (``.pt2``, read without unpickling by
:func:`~lifted_inverse.networks.importers.load_exported`); or ``package.module:factory`` with
``weights`` (safetensors or a weights-only state dict, :func:`~lifted_inverse.networks.importers.load_factory`).

Data: simulated (ground-truth ``image`` -> clean output ``N(u†)`` -> Bregman noise at relative
level ``noise``, :mod:`lifted_inverse.inversion.noise`; PSNR / SSIM against the ground truth), or
the user's ``target`` file (``.npy``, ``.pt`` tensor read with ``weights_only=True``, HDF5:
dataset ``target`` or the file's only dataset; one output or a batch ``(B, *output shape)``): no
ground truth, so no PSNR; the noise level ``δ = ε‖f^δ‖/√2`` for ``α = c·δ`` and the discrepancy
principle is estimated from ``noise`` = ε, and the relative data residual ``‖N(u) − f^δ‖/‖f^δ‖``
of each method is reported. An option that does not apply to the chosen model or data is a
``ValueError`` naming it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime import checked_device
from ._common import check_min, config_record, is_image_file, load_named_image, refuse

BUILTIN_MODELS = ("perceptron", "encoder", "resnet")
#: per-model defaults: image, size, a-priori constant c in α = c·δ, iterations (a cap where
#: ``tol`` is set), Adam learning rate, the stopping tolerance on the relative change of all
#: blocks, and for deep models the lifted solver settings (``deep``; chosen on validation digits
#: by ``benchmarks/bench_inversion.py --tune`` for the encoder). A user's model (``path``) runs
#: inertial sweeps until the relative change falls below ``tol``: a fixed number of plain sweeps
#: stops the lifted solver far from its minimiser (docs/results.md, "Inverting a user's model").
MODEL_DEFAULTS = {
    "perceptron": {"image": "camera", "size": 64, "c": 1.0, "iterations": 500, "lr": 3e-2, "outputs": 512,
                   "tol": 1e-7},
    "encoder": {"image": "digit", "size": 16, "c": 0.05, "iterations": 150, "lr": 1e-2, "tol": 1e-7,
                "deep": {"accelerate": True, "weights": [100.0, 10.0, 1.0], "inner_u": 1, "inner_states": 3}},
    "resnet": {"image": "camera", "size": 32, "c": 0.05, "iterations": 200, "lr": 1e-2, "tol": 1e-7},
    "path": {"image": "camera", "size": None, "c": 0.05, "iterations": 2000, "lr": 1e-2, "tol": 1e-5,
             "ramp": 300, "deep": {"accelerate": True}},
}
#: defaults of a checkpoint PATH that differ by the task it was trained on (the task's inputs)
TASK_DEFAULTS = {"digits-autoencoder": {"image": "digit"}}
REGULARIZERS = ("tv", "l2", "l1")
#: defaults of the options every model takes
#: (``progress`` None: bars when stderr is a terminal, :func:`lifted_inverse.runtime.show_progress`)
DEFAULTS = {"noise": 0.05, "regularizer": "tv", "seed": 0, "device": "cpu", "progress": None}
TARGET_SUFFIXES = (".npy", ".pt", ".pth", ".h5", ".hdf5")


@dataclass
class InvertOptions:
    """Options of one inversion; None takes :data:`DEFAULTS` or the model's :data:`MODEL_DEFAULTS`.
    ``alpha``: a number, ``"discrepancy"`` (Morozov, τ = 1.5) or None (α = c·δ). ``weights``: the
    state dict of a ``package.module:factory`` model; ``target``: a file with the network output
    to invert (module docstring)."""
    model: str
    weights: str | None = None
    target: str | None = None
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
    """Every option after defaults, for a user's model given its ``input_shape`` and ``task``;
    raises ``ValueError`` naming an option out of range or not applying to the model."""
    builtin = options.model in BUILTIN_MODELS
    if options.model != "perceptron":
        refuse(options, ("outputs",), f"the perceptron's output dimension, not of --model {options.model}")
    if options.model not in ("encoder", "resnet"):
        refuse(options, ("cache_dir",), "the weights cache of the pretrained encoder and resnet, not of "
               f"--model {options.model}")
    if options.target is not None:
        refuse(options, ("image",), "the ground truth of a simulated output; --target is the output "
               "itself (no ground truth)")
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
            raise ValueError(f"size: the model expects {input_shape[1]}x{input_shape[1]} inputs")
        defaults = {**defaults, "size": None if input_shape is None else input_shape[1]}

    def get(k):
        value = getattr(options, k)
        return value if value is not None else DEFAULTS.get(k, defaults.get(k))

    cfg = {k: get(k) for k in ("noise", "regularizer", "seed", "device", "progress", "image", "size",
                                "iterations")}
    cfg.update(model=options.model, alpha=alpha, c=defaults["c"], adam_lr=defaults["lr"],
               tol=defaults["tol"], weights=options.weights, target=options.target)
    if options.target is not None:
        cfg["image"] = None
    if options.model == "perceptron":
        cfg["outputs"] = get("outputs")
    if options.model in ("encoder", "resnet"):
        cfg["cache_dir"] = options.cache_dir
    return cfg


def _image_input(model: torch.nn.Module, shape, source: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """``(model, (1, H, H))``: vector inputs of ``n = H²`` entries are inverted as H×H gray images
    (a Flatten in front); other shapes than gray square images are refused."""
    shape = tuple(int(n) for n in shape)
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if side > 0 and side * side == shape[0]:
        model, shape = torch.nn.Sequential(torch.nn.Flatten(), *_modules(model)), (1, side, side)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise ValueError(f"model: the CLI inverts gray square images (1, H, H) or vectors of H² "
                         f"entries; {source} takes inputs of shape {tuple(shape)}")
    return model, shape


def _modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model) if isinstance(model, torch.nn.Sequential) else [model]


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
    model, shape = _image_input(model, shape, path)
    return model, shape, ck.task


def _factory_shape(model: torch.nn.Module, spec: str, size: int | None) -> tuple[int, ...]:
    """The per-sample input shape of a factory model: its ``input_shape`` attribute, else the
    ``(in_features,)`` of an ``nn.Linear`` first (after any ``nn.Flatten``), else ``(in_channels, size, size)`` of a first
    ``nn.Conv2d`` given ``size``."""
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        return tuple(int(n) for n in declared)
    # the first leaf after any Flatten (flattening a flat input changes nothing)
    first = next((m for m in model.modules() if not list(m.children()) and not isinstance(m, torch.nn.Flatten)),
                 None)
    if isinstance(first, torch.nn.Linear):
        return (first.in_features,)
    if isinstance(first, torch.nn.Conv2d) and size is not None:
        return (first.in_channels, size, size)
    raise ValueError(f"model: cannot tell the input shape of {spec}; give the model an input_shape "
                     "attribute (e.g. (1, 28, 28)), or --size for a model starting with nn.Conv2d")


def user_network(spec: str, weights: str | None = None, size: int | None = None
                 ) -> tuple[torch.nn.Module, tuple[int, int, int], str | None]:
    """``(network, (1, H, H), task or None)`` of ``--model spec``: ``package.module:factory``
    (with ``weights``), a ``torch.export`` archive, or a checkpoint of this project."""
    from ..networks import importers

    if importers.is_factory_spec(spec):
        model = importers.load_factory(spec, weights)
        model, shape = _image_input(model, _factory_shape(model, spec, size), spec)
        return model, shape, None
    if weights is not None:
        raise ValueError("weights: only a package.module:factory model takes separate weights "
                         f"({spec} is a file holding its own)")
    if importers.is_exported_program(spec):
        model, shape = importers.load_exported(spec)
        model, shape = _image_input(model, shape, spec)
        return model, shape, None
    return checkpoint_network(spec)


def read_target(path: str, output_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The network output ``f^δ`` in ``path`` as ``(B, *output_shape)`` (one output or a batch);
    ``ValueError("target: ...")`` for a missing or unreadable file, a wrong shape, NaN / Inf."""
    import numpy as np

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TARGET_SUFFIXES:
        raise ValueError(f"target: expected a {' / '.join(TARGET_SUFFIXES)} file, got {p.name}")
    if not p.is_file():
        raise ValueError(f"target: no such file {p}")
    try:
        if suffix == ".npy":
            array = np.load(p, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            array = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(array, torch.Tensor):
                raise ValueError(f"target: {p} holds a {type(array).__name__}, not a tensor")
        else:
            import h5py

            with h5py.File(p, "r") as f:
                names = [k for k in f if isinstance(f[k], h5py.Dataset)]
                key = "target" if "target" in names else names[0] if len(names) == 1 else None
                if key is None:
                    raise ValueError(f"target: {p} has datasets {names}; name the output 'target'")
                array = f[key][()]
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt files, pickles refused: all bad input
        raise ValueError(f"target: cannot read {p} ({str(err).splitlines()[0][:200]})") from None
    f = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if not (f.is_floating_point() or f.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"target: expected real numbers, got dtype {f.dtype}")
    f = f.to(dtype)
    if tuple(f.shape) == tuple(output_shape):
        f = f[None]
    if tuple(f.shape[1:]) != tuple(output_shape):
        raise ValueError(f"target: the network output has shape {tuple(output_shape)} (or a batch "
                         f"(B, {', '.join(map(str, output_shape))})), got {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("target: contains NaN or Inf values")
    return f


def _model(cfg: dict) -> torch.nn.Module:
    """The built-in model of a resolved config (the encoder and resnet are trained on first use,
    cached in ``cache_dir``)."""
    from ..inversion import pretrained

    if cfg["model"] == "perceptron":
        return pretrained.perceptron(cfg["size"], cfg["outputs"], seed=cfg["seed"])
    if cfg["model"] == "encoder":
        return pretrained.encoder(seed=cfg["seed"], cache_dir=cfg["cache_dir"])
    return pretrained.resnet(seed=cfg["seed"], cache_dir=cfg["cache_dir"])


def ground_truth(name: str, size: int, seed: int, resize: bool = True) -> torch.Tensor:
    """``digit[:K]`` (held-out digit K, default index ``seed``, resized to ``size``) or any
    name of :func:`~lifted_inverse.jobs._common.load_named_image`, as ``(1, size, size)``.
    ``resize=False``: an image file is never resized; one of another size is an ``image`` error
    (the user's pixels are kept unless ``--size`` asks for resizing)."""
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
    if not resize and is_image_file(name):
        img = load_named_image(name, None, seed)
        if tuple(img.shape[-2:]) != (size, size):
            raise ValueError(f"image: {name} has {img.shape[-2]}x{img.shape[-1]} pixels, the model takes "
                             f"{size}x{size} inputs; give --size {size} to resize it")
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
    """``(config, user network or None, its input shape or None)``."""
    if options.model in BUILTIN_MODELS:
        refuse(options, ("weights",), f"the state dict of a package.module:factory model, not of "
               f"--model {options.model}")
        return resolve(options), None, None
    from ..lifted import lift

    model, input_shape, task = user_network(options.model, options.weights, options.size)
    try:   # a layer without a lifted form: one line naming it, before anything runs
        lift(model, input_shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model: {err}") from None
    return resolve(options, input_shape, task), model.requires_grad_(False), input_shape


def plan_inversion(options: InvertOptions) -> dict:
    """The ``config`` record a run would write, after the checks it makes before inverting (a
    user's model is read; the built-in encoder and resnet are not trained; a target is read)."""
    cfg, model, input_shape = _load(options)
    checked_device(cfg["device"], "--device")
    if options.target is not None and (model is not None or options.model == "perceptron"):
        if model is None:
            model, input_shape = _model(cfg), (1, cfg["size"], cfg["size"])
        _target(cfg, model, input_shape, torch.device("cpu"))
    return config_record(options, cfg)


def _target(cfg: dict, model: torch.nn.Module, input_shape, device) -> torch.Tensor:
    """The user's target read and checked against the model's output (shape, range)."""
    from ..lifted import lift

    net = lift(model, input_shape)
    dtype = next(model.parameters()).dtype
    f = read_target(cfg["target"], net.state_shapes[-1], dtype).to(device)
    act = net.output_layer.activation
    if not bool(act.in_domain(f).all()):
        raise ValueError(f"target: values outside the range of the network's output activation "
                         f"{act!r} (e.g. negative values for ReLU)")
    return f


def _save_result(path: Path, arrays: dict, attrs: dict) -> None:
    """DIR/result.h5: one dataset per array (first axis: sample), provenance as attributes
    (numbers and strings as they are, anything else as JSON)."""
    import h5py

    from ..io import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in arrays.items():
            h5.create_dataset(name, data=value.detach().cpu().numpy())
        for key, value in attrs.items():
            h5.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


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
    from ..io import write_json
    from ..lifted import lift
    from ..metrics import psnr, ssim
    from ..plotting import plot_images, plot_reconstructions
    from ..runtime import show_progress

    cfg, model, input_shape = _load(options)
    device = checked_device(cfg["device"], "--device")
    if model is None:
        model, input_shape = _model(cfg), (1, cfg["size"], cfg["size"])
    model = model.to(device)
    iterations, seed, regularizer = cfg["iterations"], cfg["seed"], cfg["regularizer"]
    progress = show_progress(cfg["progress"])
    net = lift(model, input_shape)  # raises a clear error for layers without a lifted form
    if cfg["target"] is not None:
        truth, clean = None, None
        f = _target(cfg, model, input_shape, device)
        delta_b = relative_delta(f, cfg["noise"])   # estimate: ‖f^δ‖ stands in for ‖N(u†)‖
    else:
        truth = ground_truth(cfg["image"], input_shape[-1], seed, resize=options.size is not None)[None].to(device)
        with torch.no_grad():
            z_true = net.output_pre_activation(truth)
            clean = net.output_layer.activation(z_true)
            delta_b = relative_delta(clean, cfg["noise"])
            f = bregman_noise(net.output_layer.activation, z_true, delta_b, seed=seed + 1)
    batch = f.shape[0]
    delta = float(torch.linalg.vector_norm(delta_b))   # δ of the whole batch: Σ_b δ_b² = δ²
    noise_norm = math.sqrt(2.0) * delta if clean is None else float(torch.linalg.vector_norm(f - clean))
    u0 = torch.full((batch, *input_shape), 0.5, dtype=f.dtype, device=device)  # u = 0: ReLU-stationary
    common = {"input_shape": input_shape, "bounds": (0.0, 1.0), "progress": progress, "tol": 1e-7}

    # deep: 3+3 inner steps per sweep, inner Bregman weights tightened 1 -> 10 over a third of
    # the run or of the model's ``ramp`` (ρ = 10 on residual couplings: ρ = 1 leaves the ResNet
    # relaxation too loose)
    defaults = MODEL_DEFAULTS.get(cfg["model"], MODEL_DEFAULTS["path"])
    ramp = max(min(defaults.get("ramp", iterations), iterations) // 3, 1)
    deep = {"inner_u": 3, "inner_states": 3, "rho": 10.0, "weights": continuation(len(net.blocks), 10.0, ramp)}
    deep.update(defaults.get("deep", {}))

    def lifted(alpha, previous=None):
        start = previous.u if previous is not None else u0
        return invert(net, f, alpha, regularizer, u0=start, iterations=iterations, **deep,
                      **{**{k: v for k, v in common.items() if k != "input_shape"}, "tol": cfg["tol"]})

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
    # (or its relative change fell below 1e-7, or 50x the lifted iterations)
    budget = {"iterations": 50 * max(result.iterations, 1), "time_limit": max(result.seconds, 1e-3)}
    gd = invert_gradient(model, f, alpha, regularizer, method="gd", u0=u0, lr=1e-3, **budget, **common)
    adam = invert_gradient(model, f, alpha, regularizer, method="adam", u0=u0, lr=cfg["adam_lr"],
                           **budget, **common)

    def residual(u):
        with torch.no_grad():
            return float(torch.linalg.vector_norm(model(u) - f) / torch.linalg.vector_norm(f).clamp_min(1e-30))

    def quality(u):
        if truth is None:
            return math.nan, math.nan
        p = sum(float(psnr(u[b], truth[b], 1.0)) for b in range(batch)) / batch
        try:
            s = sum(float(ssim(u[b], truth[b], 1.0)) for b in range(batch)) / batch
        except ValueError:  # images below SSIM's window size
            s = math.nan
        return p, s

    lp, ls = quality(result.u)
    gp, gs = quality(gd.u)
    ap, as_ = quality(adam.u)
    metrics = {
        "model": cfg["model"], "input_shape": list(input_shape), "image": cfg["image"],
        "target": cfg["target"], "samples": batch,
        "regularizer": regularizer, "noise_level": cfg["noise"], "delta": delta,
        "delta_estimated": truth is None, "noise_norm": noise_norm, "alpha": alpha, **choice,
        "psnr": lp, "ssim": ls, "seconds": result.seconds, "iterations": result.iterations,
        "converged": result.converged, "residual": residual(result.u),
        "lifted_method": result.method,
        "baseline_psnr": gp, "baseline_ssim": gs, "baseline_seconds": gd.seconds,
        "baseline_method": gd.method, "baseline_iterations": gd.iterations, "baseline_residual": residual(gd.u),
        "adam_psnr": ap, "adam_ssim": as_, "adam_seconds": adam.seconds, "adam_lr": cfg["adam_lr"],
        "adam_iterations": adam.iterations, "adam_residual": residual(adam.u),
        "device": str(device),
        "config": config_record(options, {**cfg, "size": input_shape[-1],
                                          "alpha": cfg["alpha"] if cfg["alpha"] == "discrepancy" else alpha}),
    }
    if truth is None:   # no ground truth: no metric is invented
        for key in ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "adam_psnr", "adam_ssim"):
            metrics.pop(key)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"lifted": result.u, "gradient_descent": gd.u, "adam": adam.u, "target": f}
    if truth is not None:
        arrays.update(ground_truth=truth, clean_output=clean)
    _save_result(out / "result.h5", arrays, {
        k: metrics[k] for k in ("model", "regularizer", "alpha", "alpha_rule", "delta", "delta_estimated",
                                "noise_level", "iterations", "converged", "lifted_method", "baseline_method")
    } | {"input_shape": list(input_shape), "target_file": cfg["target"] or "", "config": metrics["config"]})
    write_json(out / "metrics.json", metrics)  # strict JSON: a non-finite value is null + reason
    title = f"{cfg['model']}: " + (f"noisy output f^δ (ε={cfg['noise']:g})" if truth is not None
                                   else f"target {Path(cfg['target']).name}") + f", α={alpha:.3g}"
    recovered = {f"lifted ({result.seconds:.2f}s)": result.u[0], f"gradient descent ({gd.seconds:.2f}s)": gd.u[0]}
    if truth is not None:
        plot_reconstructions(truth[0], _as_panel(f[0]), recovered, out / "inversion.png", data_range=1.0,
                             title=title)
    else:
        plot_images({"target f^δ": _as_panel(f[0]), **recovered}, out / "inversion.png", title=title)
    return metrics
