"""``mnist-mlp``: an MLP on MNIST-format IDX files from a local folder (``--data FOLDER``).

Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` with
:class:`lifted_inverse.datasets.mnist.MnistIdx` (nothing is downloaded). Model
``784-256-256-10`` ReLU (``hidden_layers``, ``width``, ``activation`` as for digits-mlp), inputs standardised with the training mean/std (global), softmax output.
``config.extra['limit']`` caps the number of training samples. The last 10 % of the IDX training
file (after ``limit``) is the validation set; ``t10k`` is the test set.
"""
from __future__ import annotations

import torch

from ..datasets.mnist import MnistIdx
from ..lifted.activations import Softmax
from ..networks import mlp
from .digits import mlp_architecture
from .tasks import Task, TaskConfig, register_task


@register_task("mnist-mlp")
def mnist_mlp(config: TaskConfig) -> Task:
    if not config.data:
        raise ValueError("data: mnist-mlp needs --data FOLDER holding the MNIST IDX files")
    train, test = MnistIdx(config.data, train=True), MnistIdx(config.data, train=False)
    limit = config.extra.get("limit")
    xtr, ytr = train.images.flatten(1), train.labels
    if limit:
        xtr, ytr = xtr[:int(limit)], ytr[:int(limit)]
    if config.noise is not None:
        raise ValueError("noise: task 'mnist-mlp' is a classifier of clean digits; --noise does not apply")
    if set(config.extra) - {"limit", "hidden_layers", "width", "activation"}:
        raise ValueError(f"{min(set(config.extra) - {'limit', 'hidden_layers', 'width', 'activation'})}: "
                         "does not apply to task 'mnist-mlp'")
    n_val = max(1, len(xtr) // 10)
    xva, yva = xtr[len(xtr) - n_val:], ytr[len(ytr) - n_val:]
    xtr, ytr = xtr[:len(xtr) - n_val], ytr[:len(ytr) - n_val]
    xte, yte = test.images.flatten(1), test.labels
    mean, std = xtr.mean(), xtr.std().clamp_min(1e-6)
    xtr, xva, xte = (((v - mean) / std).to(config.dtype) for v in (xtr, xva, xte))
    n_in = xtr.shape[1]
    torch.manual_seed(config.seed)
    widths, act = mlp_architecture(config.extra, n_in, 10)
    model = mlp(widths, act).to(dtype=config.dtype)
    onehot = torch.nn.functional.one_hot(ytr, 10).to(config.dtype)
    dev = config.device
    return Task("mnist-mlp", model.to(dev), xtr.to(dev), onehot.to(dev), xte.to(dev), yte.to(dev),
                x_val=xva.to(dev), y_val=yva.to(dev), kind="classification", output_activation=Softmax(), input_shape=(n_in,),
                y_train=ytr.to(dev))
