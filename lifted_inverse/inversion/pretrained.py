"""Networks to invert, built or trained by the project itself on built-in data (no download).

* :func:`perceptron` — ``u ↦ ReLU(W vec(u))``, ``W ∈ R^{m×n²}`` with i.i.d. N(0, 1) entries (seeded),
  zero bias; the literature's example is 64×64 → 512.
* :func:`encoder` — the encoder of a small convolutional autoencoder trained on the fly on
  scikit-learn's digits (8×8 upsampled to 16×16, values in [0, 1]); code of dimension ``code``:
  ``Conv(1→8, 3, s2) ReLU Conv(8→16, 3, s2) ReLU Flatten Linear(256→code)``.
* :func:`resnet` — ``blocks`` :class:`ResidualBlock` s ``x + Conv(ch→1) ReLU Conv(1→ch) x`` (3×3 convs)
  trained on the fly on random image patches to approximate ``u ↦ u³ + u`` per pixel.

Training takes a few seconds on 2 CPU cores and is cached in memory per argument tuple; pass
``cache_dir`` (e.g. ``~/.cache/lifted_inverse``) to also keep the network on disk as a checkpoint
(:mod:`lifted_inverse.networks.checkpoint`: written atomically, read with ``weights_only=True``).
Results are deterministic for a given ``seed``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..lifted.layers import ResidualBlock
from ..networks.checkpoint import load_network, save_checkpoint

_MEMORY: dict[tuple, nn.Module] = {}
DIGIT_SIZE = 16
DIGITS_TRAIN = 1500  # digits[:1500] train the autoencoder, digits[1500:] are held out
PATCH_SIZE = 16  # side of the image patches the resnet is trained on


def perceptron(size: int = 64, outputs: int = 512, seed: int = 0, dtype=torch.float32) -> nn.Sequential:
    """``Sequential(Flatten, Linear(size² → outputs), ReLU)`` with N(0, 1) weights, zero bias."""
    if size < 1 or outputs < 1:
        raise ValueError(f"size, outputs: expected positive integers, got {size}, {outputs}")
    gen = torch.Generator().manual_seed(int(seed))
    linear = nn.Linear(size * size, outputs)
    with torch.no_grad():
        linear.weight.copy_(torch.randn((outputs, size * size), generator=gen))
        linear.bias.zero_()
    return nn.Sequential(nn.Flatten(), linear, nn.ReLU()).to(dtype).eval().requires_grad_(False)


def digits(split: str = "test", dtype=torch.float32) -> torch.Tensor:
    """scikit-learn digits as ``(N, 1, 16, 16)`` in [0, 1] (bilinear 2× upsampling of 8×8)."""
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    images = torch.as_tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    images = nnf.interpolate(images, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp(0.0, 1.0)
    images = images[:DIGITS_TRAIN] if split == "train" else images[DIGITS_TRAIN:]
    return images.to(dtype)


def _encoder_net(code: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, code),
    )


def _decoder_net(code: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(code, 16 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (16, 4, 4)),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid(),
    )


def _cached(name: str, config: dict, train, cache_dir: str | os.PathLike | None, dtype,
            input_shape: tuple[int, ...]) -> nn.Module:
    """The network ``train()`` trained with ``config``, kept in memory and, with
    ``cache_dir``, in a checkpoint file there (:mod:`lifted_inverse.networks.checkpoint`, so
    ``invert --model`` opens it too)."""
    key = (name, *config.values())
    if key in _MEMORY:
        return copy.deepcopy(_MEMORY[key]).to(dtype)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / ("-".join(str(k) for k in key) + ".checkpoint.pt")
    if path is not None and path.is_file():
        model = load_network(path, what="cache_dir")
    else:
        model = train()
        if path is not None:
            save_checkpoint(path, model, task=f"pretrained-{name}", input_shape=input_shape, config=config)
    _MEMORY[key] = model.eval().requires_grad_(False)
    return copy.deepcopy(_MEMORY[key]).to(dtype)  # callers may move / cast their copy freely


def encoder(code: int = 100, seed: int = 0, steps: int = 300, cache_dir=None,
            dtype=torch.float32) -> nn.Sequential:
    """Encoder ``(B, 1, 16, 16) → (B, code)`` of a conv autoencoder trained on the digits
    (Adam, lr 3e-3, batch 128, ``steps`` steps, MSE reconstruction loss)."""

    def train() -> nn.Sequential:
        torch.manual_seed(seed)
        enc, dec = _encoder_net(code), _decoder_net(code)
        data = digits("train")
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=3e-3)
        for _ in range(steps):
            batch = data[torch.randint(0, data.shape[0], (128,), generator=gen)]
            loss = nnf.mse_loss(dec(enc(batch)), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return enc

    return _cached("encoder", {"code": code, "seed": seed, "steps": steps}, train, cache_dir, dtype,
                   (1, DIGIT_SIZE, DIGIT_SIZE))


def _patches(n: int, size: int, seed: int) -> torch.Tensor:
    from ..datasets import NATURAL_IMAGES, builtin_image

    rng = np.random.default_rng(seed)
    images = [builtin_image(name, 128) for name in NATURAL_IMAGES[:6]]
    out = torch.empty((n, 1, size, size))
    for i in range(n):
        img = images[rng.integers(len(images))]
        r, c = rng.integers(0, 128 - size, size=2)
        out[i] = img[:, r:r + size, c:c + size]
    return out


def resnet(blocks: int = 4, channels: int = 8, seed: int = 0, steps: int = 300, cache_dir=None,
           dtype=torch.float32) -> nn.Sequential:
    """Residual conv net ``(B, 1, H, W) → (B, 1, H, W)`` trained to approximate ``u ↦ u³ + u``
    per pixel on 16×16 patches of built-in images mixed with uniform noise (Adam, lr 3e-3)."""

    def train() -> nn.Sequential:
        torch.manual_seed(seed)
        net = nn.Sequential(*[
            ResidualBlock(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(channels, 1, 3, padding=1))
            for _ in range(blocks)
        ])
        gen = torch.Generator().manual_seed(seed)
        patches = _patches(512, PATCH_SIZE, seed)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(steps):
            idx = torch.randint(0, patches.shape[0], (64,), generator=gen)
            u = torch.cat([patches[idx[:32]], torch.rand((32, 1, PATCH_SIZE, PATCH_SIZE), generator=gen)])
            loss = nnf.mse_loss(net(u), u ** 3 + u)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net

    return _cached("resnet", {"blocks": blocks, "channels": channels, "seed": seed, "steps": steps}, train,
                   cache_dir, dtype, (1, PATCH_SIZE, PATCH_SIZE))
