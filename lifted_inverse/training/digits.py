"""Tasks on scikit-learn's 8×8 digits (1797 images, built in; nothing downloaded).

* ``digits-mlp``: 64-256-256-10 ReLU MLP, standardised inputs, softmax output;
  ``config.extra`` may set ``hidden_layers`` (2), ``width`` (256) and the hidden ``activation``
  (a proximal activation by name: relu, leaky-relu, tanh, sigmoid, soft-threshold, clip, identity).
* ``digits-resnet``: ``Linear(64, w)``, ReLU, 8 residual blocks ``w → w → w``, ``Linear(w, 10)``
  (``w = 128``; ``config.extra`` may set ``width`` and ``blocks``).
* ``digits-autoencoder``: sparse denoising autoencoder 64-128-32-128-64 with a soft-threshold
  bottleneck, inputs in [0, 1] plus seeded Gaussian noise (``--noise``, default 0.2), scored by
  PSNR against the clean digit. Its encoder (the first two affine layers, up to the code) is
  recorded in the task description so ``invert --model`` can invert it.

Split (fixed, seed 0, whatever the training seed): 20 % test, 10 % validation (model selection
reads only these), 70 % training; the standardisation uses the training part only.
``config.seed`` seeds the model.
"""
from __future__ import annotations

import torch

from ..lifted.activations import Softmax, SoftThreshold
from ..networks import mlp, resnet_mlp
from .tasks import Task, TaskConfig, register_task, seeded_three_way_split

SPLIT_SEED = 0
VAL_FRACTION, TEST_FRACTION = 0.1, 0.2

#: lifted training of the digits classifiers, every solver: each mini-batch's states from the
#: forward pass (every hidden penalty starts at zero), then a solved state phase: backward
#: Gauss–Seidel sweeps, one per hidden state ('auto'), with over-relaxed state steps 1.9/L, so
#: the output's residual reaches the lower layers and every W-block gets a gradient (one sweep
#: leaves the lower layers of a deep chain a rounding-level gradient, which Adam on blocks turns
#: into steps of noise). BCD: λ = 0.3 and W-steps 4/L (L is λ_max of the input Gram, dominated
#: by the mean of the ReLU inputs, so 1/L is short in every other direction; 8/L diverges once
#: the states are solved). Comparisons, on the validation split: docs/results.md.
CLASSIFIER_PRESETS = {"lifted": {"state_init": "forward", "state_order": "backward",
                                 "state_sweeps": "auto", "state_lr": 1.9},
                      ("bregman", "bcd"): {"lam": 0.3, "lr": 4.0}}


def load_digits_tensors(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits images ``(1797, 64)`` with values in [0, 16] and labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=dtype), torch.tensor(d.target, dtype=torch.long)


#: hidden activations an MLP task accepts (the output layer is always the softmax)
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "soft_threshold", "clip", "identity")


def _no_files(name: str, config: TaskConfig, noise: bool = False, options: tuple = ()) -> None:
    if config.data is not None:
        raise ValueError(f"data: task {name!r} uses the built-in digits and reads no data files")
    if not noise and config.noise is not None:
        raise ValueError(f"noise: task {name!r} is a classifier of clean digits; --noise does not apply")
    unknown = set(config.extra) - set(options)
    if unknown:
        raise ValueError(f"{min(unknown)}: does not apply to task {name!r}")


def _positive(extra: dict, key: str, default: int) -> int:
    v = extra.get(key, default)
    if isinstance(v, bool) or int(v) != v or v < 1:
        raise ValueError(f"{key}: must be a positive integer, got {v!r}")
    return int(v)


def mlp_architecture(extra: dict, n_in: int, n_out: int, hidden_layers: int = 2, width: int = 256):
    """``(widths, activation)`` of an MLP task from its options ``hidden_layers``, ``width`` and
    ``activation`` (dashes or underscores)."""
    depth = _positive(extra, "hidden_layers", hidden_layers)
    w = _positive(extra, "width", width)
    act = str(extra.get("activation", "relu")).replace("-", "_")
    if act not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(HIDDEN_ACTIVATIONS)}, got {act!r}")
    return (n_in, *[w] * depth, n_out), act


def _classification(name: str, config: TaskConfig, model_fn) -> Task:
    x, y = load_digits_tensors(config.dtype)
    tr, va, te = seeded_three_way_split(len(x), VAL_FRACTION, TEST_FRACTION, SPLIT_SEED)
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    torch.manual_seed(config.seed)
    model = model_fn().to(dtype=config.dtype)
    onehot = torch.nn.functional.one_hot(y, 10).to(config.dtype)
    dev = config.device
    return Task(name, model.to(dev), x[tr].to(dev), onehot[tr].to(dev), x[te].to(dev), y[te].to(dev),
                x_val=x[va].to(dev), y_val=y[va].to(dev),
                kind="classification", output_activation=Softmax(), input_shape=(64,),
                y_train=y[tr].to(dev), presets=CLASSIFIER_PRESETS)


@register_task("digits-mlp")
def digits_mlp(config: TaskConfig) -> Task:
    _no_files("digits-mlp", config, options=("hidden_layers", "width", "activation"))
    widths, act = mlp_architecture(config.extra, 64, 10)
    task = _classification("digits-mlp", config, lambda: mlp(widths, act))
    task.info = {"widths": list(widths), "activation": act}
    return task


@register_task("digits-resnet")
def digits_resnet(config: TaskConfig) -> Task:
    _no_files("digits-resnet", config, options=("width", "blocks"))
    blocks = _positive(config.extra, "blocks", 8)
    width = _positive(config.extra, "width", 128)
    task = _classification("digits-resnet", config, lambda: resnet_mlp(64, width, 10, blocks=blocks))
    task.info = {"width": width, "blocks": blocks}
    return task


@register_task("digits-autoencoder")
def digits_autoencoder(config: TaskConfig) -> Task:
    _no_files("digits-autoencoder", config, noise=True)
    noise = 0.2 if config.noise is None else float(config.noise)
    if not noise >= 0:
        raise ValueError(f"noise: must be >= 0, got {noise}")
    x, _ = load_digits_tensors(config.dtype)
    x = x / 16.0
    tr, va, te = seeded_three_way_split(len(x), VAL_FRACTION, TEST_FRACTION, SPLIT_SEED)
    gen = torch.Generator().manual_seed(SPLIT_SEED + 1)
    noisy = x + noise * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    torch.manual_seed(config.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 32), SoftThreshold(0.05),
        torch.nn.Linear(32, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
    ).to(dtype=config.dtype, device=config.device)
    dev = config.device
    # the encoder is model[:4] (64 → 128 → 32, ReLU then soft-threshold): the part `invert` inverts
    return Task("digits-autoencoder", model, noisy[tr].to(dev), x[tr].to(dev), noisy[te].to(dev),
                x[te].to(dev), x_val=noisy[va].to(dev), y_val=x[va].to(dev), kind="regression",
                output_activation=None, input_shape=(64,), data_range=1.0,
                info={"noise": {"sigma": noise, "relative": False}, "encoder_modules": 4})
