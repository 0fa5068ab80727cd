"""Tasks on scikit-learn's 8×8 digits (1797 images, built in; nothing downloaded).

* ``digits-mlp``: 64-256-256-10 ReLU MLP, standardised inputs, softmax output.
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

#: lifted Bregman BCD on the digits classifiers: each mini-batch's states from the forward pass
#: (every hidden penalty starts at zero), state blocks top-down (the output residual reaches the
#: lower layers within one sweep) with over-relaxed steps 1.9/L, λ = 0.3, and W-steps 8/L (L is
#: λ_max of the input Gram, dominated by the mean of the ReLU inputs, so 1/L is short in every
#: other direction). Comparison with the engine defaults: docs/results.md.
CLASSIFIER_PRESETS = {("bregman", "bcd"): {"state_init": "forward", "state_order": "top-down",
                                           "state_lr": 1.9, "lam": 0.3, "lr": 8.0}}


def load_digits_tensors(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits images ``(1797, 64)`` with values in [0, 16] and labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=dtype), torch.tensor(d.target, dtype=torch.long)


def _no_files(name: str, config: TaskConfig, noise: bool = False) -> None:
    if config.data is not None:
        raise ValueError(f"data: task {name!r} uses the built-in digits and reads no data files")
    if not noise and config.noise is not None:
        raise ValueError(f"noise: task {name!r} is a classifier of clean digits; --noise does not apply")
    unknown = set(config.extra) - {"width", "blocks"}
    if unknown:
        raise ValueError(f"{min(unknown)}: does not apply to task {name!r}")


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
    _no_files("digits-mlp", config)
    if config.extra:
        raise ValueError(f"{min(config.extra)}: does not apply to task 'digits-mlp'")
    return _classification("digits-mlp", config, lambda: mlp((64, 256, 256, 10)))


@register_task("digits-resnet")
def digits_resnet(config: TaskConfig) -> Task:
    _no_files("digits-resnet", config)
    blocks = int(config.extra.get("blocks", 8))
    width = int(config.extra.get("width", 128))
    return _classification("digits-resnet", config, lambda: resnet_mlp(64, width, 10, blocks=blocks))


@register_task("digits-autoencoder")
def digits_autoencoder(config: TaskConfig) -> Task:
    _no_files("digits-autoencoder", config, noise=True)
    if config.extra:
        raise ValueError(f"{min(config.extra)}: does not apply to task 'digits-autoencoder'")
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
