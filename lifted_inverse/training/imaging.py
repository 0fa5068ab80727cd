"""Imaging tasks for unrolled proximal networks: ``pnn-denoise``, ``unrolled-deblur``, ``unrolled-ct``.

Flow: data (training patches / phantoms, a fixed held-out test set of whole images never cut
into training patches) → forward operator + seeded Gaussian noise → network (PNN or unrolled
proximal gradient) → lifted Bregman training (:mod:`lifted_inverse.lifted`) or Adam backprop of the
same network → test PSNR/SSIM, history of test PSNR against wall-clock, checkpoint, figures.

* ``pnn-denoise``: patches of the scikit-image photographs not in the test set (plus the images of
  ``--data DIR``), test images camera, coins, moon at 256×256; noise σ ∈ {0.05, 0.1, 0.2}
  (default 0.1). Baseline: TV denoising, α tuned on training patches.
* ``unrolled-deblur``: the same images, Gaussian blur 9×9, σ_blur = 1.5, circular boundary,
  noise 0.01 (absolute). Baseline: TV-PDHG deblurring, α tuned on training patches.
* ``unrolled-ct``: 128×128 images, 60 angles in [0, π), ⌈128√2⌉ = 182 detector bins (the rays
  cover the whole square: photographs fill it, unlike phantoms in the inscribed disc), Gaussian
  noise 1% relative to rms(Ax); the network's data term is ramp-weighted (preconditioned
  steps, :mod:`~lifted_inverse.networks.unrolled`), clip level λ = 0.01; training:
  random-ellipse phantoms (seed 0) and the non-test photographs; test: 4 held-out ellipse
  phantoms (seed 10⁶), Shepp–Logan, camera, coins, moon. Baseline: FBP (ramp), TV also reported.
  ``scanner`` (a preset of :mod:`lifted_inverse.operators.scanners`) or ``geometry='fan'``
  replaces the parallel-beam geometry (the spec is recorded in the task description and checkpoint).

``--data`` adds a folder of images to the training images, or (an HDF5 file: ``lifted-inverse
data`` or deepinv layout) replaces the training data, read lazily in mini-batches with the
operator rebuilt from the file and validation / test images from it
(:mod:`~lifted_inverse.training.imaging_data`).

The training measurements are drawn seeded (and redrawn per epoch, seeded by the epoch: noise
augmentation) so lifted and backprop training see the same pairs; validation images (never
test images) select the model. An :class:`ImagingTask` is a task of the one trainer
(:func:`lifted_inverse.training.train`): it implements the same methods as
:class:`~.tasks.Task`, and its ``presets`` hold the imaging settings of the lifted engine.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..datasets import (
    DEFAULT_TEST_IMAGES,
    NATURAL_IMAGES,
    ImageFolder,
    PatchDataset,
    builtin_image,
    random_ellipses,
    shepp_logan,
    split_images,
)
from ..lifted import lift
from ..metrics import psnr, ssim
from ..networks.pnn import PNN
from ..networks.unrolled import UnrolledProximalNet
from ..operators import GaussianNoise, Identity, operator_from_spec
from ..operators.base import LinearOperator
from ..runtime import checked_device
from .tasks import register_task

IMAGING_TASKS = ("pnn-denoise", "unrolled-deblur", "unrolled-ct")
DENOISE_LEVELS = (0.05, 0.1, 0.2)


#: lifted-engine settings of every imaging task (over the engine defaults; a task's own presets
#: and the caller win): each mini-batch's states from the forward pass, then a solved state
#: phase: backward Gauss–Seidel sweeps, one per free state ('auto'), of one over-relaxed
#: prox-gradient step 1.9/ℓ per state (a single sweep passes on about half of the residual per
#: state, so the lower layers' W-gradient falls by about 2^-depth: docs/results.md), τ_k
#: refreshed by two warm-started power iterations, ISGM with its proximal term
#: (1/2τ)‖θ − θ^k‖², τ = 1 (the largest weight 1/τ of those compared on validation that did not
#: lower the validation PSNR: docs/results.md), and per-solver steps
IMAGING_PRESETS = {
    "all": {"epochs": 10, "batch_size": 32},
    "lifted": {"state_order": "backward", "state_init": "forward", "state_sweeps": "auto",
               "state_steps": 1, "state_lr": 1.9, "inner_sweeps": 1, "tau": 1.0,
               "power_iterations": 2},
    "backprop": {"lr": 1e-3},
    ("bregman", "adam"): {"lr": 3e-3},
    ("bregman", "isgm"): {"lr": 1e-2},
    # full-batch BCD keeps per-sample states, so the measurements stay fixed
    ("bregman", "bcd"): {"lr": 1e-2, "state_init": "store", "batch_size": 0, "fresh_noise": False},
}


@dataclass
class ImagingTask:
    """Data, network and scoring of one imaging task (the trainer's task interface).

    ``operator(shape) -> A`` builds the forward operator for images of ``shape = (C, H, W)``
    (None for the PNN, which takes the noisy image itself). ``x_train`` (N, C, P, P) clean,
    ``y_train`` their measurements, in memory; or, with ``source`` (a
    :class:`~.imaging_data.FilePairs`), both None and the training pairs read from a file per
    mini-batch. ``test_x``/``test_y`` and ``val_x``/``val_y`` lists of whole images (C, H, W)
    and their measurements; ``baseline(y, A) -> x`` the classical reconstruction. The network
    is ``net`` (``model`` for the trainer). ``data_info``: provenance of a file's data.
    """

    name: str
    net: torch.nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    test_x: list
    test_y: list
    test_names: list
    operator_spec: dict
    noise: dict
    baseline_name: str
    baseline: Callable
    presets: dict = field(default_factory=dict)
    val_x: list = field(default_factory=list)
    val_y: list = field(default_factory=list)
    _operators: dict = field(default_factory=dict, repr=False)
    source: object | None = None
    data_info: dict | None = None

    metric = "psnr"

    # ---- the trainer's interface ------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self.net

    @property
    def n_train(self) -> int:
        return self.source.n if self.source is not None else int(self.x_train.shape[0])

    @property
    def device(self) -> torch.device:
        return self.source.device if self.source is not None else self.x_train.device

    @property
    def image_shape(self) -> tuple:
        """(C, H, W) of a training image."""
        return self.source.image_shape if self.source is not None else tuple(self.x_train.shape[1:])

    @property
    def measurement_shape(self) -> tuple:
        """Shape of one training measurement (the network's input)."""
        return self.source.measurement_shape if self.source is not None else tuple(self.y_train.shape[1:])

    @property
    def has_validation(self) -> bool:
        return bool(self.val_x)

    @property
    def train_operator(self) -> LinearOperator | None:
        return self.operator(self.image_shape)

    def train_batch(self, ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(measurements, clean images)`` of the training samples ``ids`` (all when None)."""
        if self.source is not None:
            return self.source.batch(ids)
        if ids is None:
            return self.y_train, self.x_train
        return self.y_train.index_select(0, ids), self.x_train.index_select(0, ids)

    def lifted_network(self, model: torch.nn.Module):
        """The lifted view of ``model`` with the training operator as its fixed linear map."""
        return lift(model, input_shape=self.measurement_shape, operator=self.train_operator)

    def backprop_loss(self, model, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``½‖N(y) − x†‖²`` per sample, batch mean: the loss the lifted output layer carries."""
        out = self.apply(inputs, self.train_operator, model)
        return 0.5 * (out - target).flatten(1).pow(2).sum(1).mean()

    def after_update(self, model) -> None:
        """The step sizes τ_k = step_factor/‖L_k‖² follow the new weights."""
        model.prox.refresh_steps()

    def new_epoch(self, epoch: int, seed: int) -> None:
        """Fresh noise for the training measurements from the second epoch on, seeded by
        ``(seed, epoch)`` so a resumed run draws the same (a file's clean images: per sample,
        :class:`~.imaging_data.FilePairs`; a file's measurements are kept)."""
        if self.source is not None:
            self.source.new_epoch(epoch, seed)
        elif epoch > 0:
            self.y_train = self.measure_train(seed=10**6 * (seed + 1) + 10**4 * epoch)

    def describe(self) -> dict:
        out = {"task": self.name, "input_shape": list(self.measurement_shape),
               "image_shape": list(self.image_shape), "operator": dict(self.operator_spec),
               "noise": dict(self.noise), "network": dict(self.net.config), "n_train": self.n_train}
        if self.data_info is not None:
            out["data"] = dict(self.data_info)
        return out

    def report(self, model) -> dict:
        """Baseline (and, for denoising, the noisy input) on the test images, beside the network."""
        base = self.evaluate(self.baseline, "test")
        out = {"baseline": self.baseline_name, "baseline_psnr": base["test_psnr"],
               "baseline_ssim": base["test_ssim"], "baseline_psnr_per_image": base["test_psnr_per_image"],
               "baseline_alpha": getattr(self.baseline, "alpha", None)}
        if self.operator_spec["name"] == "denoise":
            out["noisy_psnr"] = self.evaluate(lambda y, A: y, "test")["test_psnr"]
        return out

    def write_figures(self, model, label: str, out) -> None:
        """``reconstructions.png``: the first test image, its measurement, the baseline and the
        network."""
        from pathlib import Path

        from ..plotting import plot_reconstructions

        x, y = self.test_x[0], self.test_y[0]
        A = self.operator(tuple(x.shape))
        with torch.no_grad():
            recs = {self.baseline_name: self.baseline(y[None], A)[0].cpu(),
                    label: self.apply(y[None], A, model)[0].cpu()}
        plot_reconstructions(x.cpu(), y.cpu(), recs, Path(out) / "reconstructions.png", data_range=1.0,
                             title=f"{self.name}: {self.test_names[0]} (held out)")

    # ---- data, operator, scoring ------------------------------------------------------------
    def operator(self, shape) -> LinearOperator | None:
        """The operator for images of ``shape``, built once per shape (its power-iterated norm,
        sparse matrix or FFT kernel are cached on the instance and reused by every batch)."""
        return cached_operator(self._operators, self.operator_spec, shape)

    def measure_train(self, seed: int) -> torch.Tensor:
        """Fresh measurements ``A x_i + e_i`` of the training images, noise seeded by ``seed``."""
        return _measure_batched(self.x_train, self.train_operator, self.noise, seed)

    def apply(self, y: torch.Tensor, A: LinearOperator | None, model=None) -> torch.Tensor:
        """The network (``model``, default ``net``) on a batch of measurements."""
        model = self.net if model is None else model
        return model(y) if A is None else model(y, A)

    @torch.no_grad()
    def evaluate(self, recon=None, split: str = "test") -> dict:
        """Mean PSNR/SSIM (data range 1) on the held-out ``'test'`` images or the ``'val'`` images
        (model selection; never seen in training) of the network ``recon`` (an ``nn.Module``), of
        a reconstruction function ``recon(y, A)``, or of ``net`` (None)."""
        if recon is None or isinstance(recon, torch.nn.Module):
            module = self.net if recon is None else recon
            was = module.training
            module.eval()
            try:
                return self._scores(lambda y, A: self.apply(y, A, module), split)
            finally:
                module.train(was)
        return self._scores(recon, split)

    def _scores(self, recon, split: str) -> dict:
        if split not in ("test", "val"):
            raise ValueError(f"split: expected 'test' or 'val', got {split!r}")
        if split == "val":
            if not self.val_x:
                raise ValueError("split: this task has no validation images")
            ps = [float(psnr(recon(y[None], self.operator(tuple(x.shape))), x[None], 1.0, reduction="mean"))
                  for x, y in zip(self.val_x, self.val_y)]
            return {"val_psnr": sum(ps) / len(ps)}
        ps, ss = [], []
        for x, y in zip(self.test_x, self.test_y):
            A = self.operator(tuple(x.shape))
            out = recon(y[None], A)
            ps.append(float(psnr(out, x[None], 1.0, reduction="mean")))
            ss.append(float(ssim(out, x[None], 1.0, reduction="mean")))
        return {"test_psnr": sum(ps) / len(ps), "test_ssim": sum(ss) / len(ss),
                "test_psnr_per_image": dict(zip(self.test_names, ps))}


def cached_operator(cache: dict, spec: dict, shape) -> LinearOperator | None:
    """``build_operator(spec, shape)``, built once per shape and kept in ``cache``."""
    key = tuple(int(n) for n in shape)
    if key not in cache:
        cache[key] = build_operator(spec, key)
    return cache[key]


def build_operator(spec: dict, shape) -> LinearOperator | None:
    """The operator of the spec (:func:`~lifted_inverse.operators.registry.operator_from_spec`);
    None for ``'denoise'``: the PNN takes the noisy image itself."""
    return None if spec["name"] == "denoise" else operator_from_spec(spec, shape)


def measure(x: torch.Tensor, A: LinearOperator | None, noise: dict, seed: int) -> torch.Tensor:
    """``y = A x + e`` with seeded Gaussian ``e`` (relative to rms(Ax) when ``noise['relative']``)."""
    with torch.no_grad():
        clean = x if A is None else A(x)
        return GaussianNoise(noise["sigma"], relative=noise["relative"], seed=seed)(clean)


# ---- data ------------------------------------------------------------------------------------
#: whole images held out from training for model selection (never test images)
VALIDATION_IMAGES = ("astronaut", "clock")


def _training_images(data: str | None, size=None) -> list:
    train, _ = split_images(NATURAL_IMAGES, DEFAULT_TEST_IMAGES + VALIDATION_IMAGES)
    images = [builtin_image(n, size) for n in train]
    if data:
        folder = ImageFolder(data, size=size, gray=True)
        images += [folder[i] for i in range(len(folder))]
    return images


def _patches(images, patch: int, n: int, seed: int) -> torch.Tensor:
    ds = PatchDataset(images, patch, n, seed=seed)
    return torch.stack([ds[i] for i in range(len(ds))])


def _measure_batched(x, A, noise, seed, chunk=64):
    """``measure`` in chunks of ``chunk`` images, chunk ``i`` seeded by ``seed + i``."""
    return torch.cat([measure(x[i:i + chunk], A, noise, seed + i) for i in range(0, len(x), chunk)])


def _tune_alpha(solve, x, y, A, grid) -> float:
    """The α of ``grid`` with the best mean PSNR on (training) pairs ``x, y``."""
    best, best_alpha = -math.inf, grid[0]
    for a in grid:
        p = float(psnr(solve(y, A, a), x, 1.0, reduction="mean"))
        if p > best:
            best, best_alpha = p, a
    return best_alpha


class TVBaseline:
    """TV-PDHG reconstruction ``(y, A) -> x`` with α chosen from ``σ·{0.3, 0.5, 0.8, 1.2, 1.8}``
    by mean PSNR on training pairs; the choice is made on first use (a run that never reports
    the baseline, e.g. ``train --dry-run``, does not pay for it)."""

    def __init__(self, x_tune, y_tune, A_tune, sigma_abs: float):
        self._tune = (x_tune, y_tune, A_tune)
        self.grid = [sigma_abs * c for c in (0.3, 0.5, 0.8, 1.2, 1.8)]
        self._alpha: float | None = None

    @staticmethod
    def solve(y, A, alpha):
        from ..reconstruction import tv_pdhg

        A = A if A is not None else Identity(tuple(y.shape[1:]))
        return tv_pdhg(A, y, alpha, nonneg=True, max_iter=200, tol=1e-5).x

    @property
    def alpha(self) -> float:
        if self._alpha is None:
            x, y, A = self._tune
            self._alpha = _tune_alpha(self.solve, x, y, A, self.grid)
        return self._alpha

    def __call__(self, y, A):
        return self.solve(y, A, self.alpha)


def _data_kind(data: str | None) -> str | None:
    """``'folder'`` (a directory of images), ``'file'`` (an HDF5 file of pairs) or None; anything
    else is a ``ValueError`` naming ``data``."""
    if data is None:
        return None
    from pathlib import Path

    from .imaging_data import is_hdf5_file

    if Path(data).is_dir():
        return "folder"
    if is_hdf5_file(data):
        return "file"
    if Path(data).is_file():
        raise ValueError(f"data: {str(data)!r} is not an HDF5 file (the imaging tasks read a folder of "
                         "images or an .h5 file of (ground truth, measurement) pairs)")
    raise ValueError(f"data: no such folder or file {str(data)!r}")


def _test_images(name: str, shape) -> tuple[list, list]:
    """The held-out test images of task ``name`` at image shape (C, H, W) = (1, H, W)."""
    if shape[0] != 1:
        raise ValueError(f"data: the images have {shape[0]} channels; the built-in test images are gray "
                         "(give a file with a test split, x_test / y_test)")
    size = tuple(shape[1:])
    names = list(DEFAULT_TEST_IMAGES)
    images = [builtin_image(t, size) for t in DEFAULT_TEST_IMAGES]
    if name == "unrolled-ct" and size[0] == size[1]:
        names = [f"ellipse{i}" for i in range(4)] + ["shepp_logan"] + names
        images = list(random_ellipses(4, size[0], seed=10**6)) + [shepp_logan(size[0])] + images
    return names, images


def make_imaging_task(name: str, *, noise: float | None = None, data: str | None = None,
                      seed: int = 0, n_train: int | None = None, patch: int | None = None,
                      features: int | None = None, layers: int | None = None, tied: bool = False,
                      test_size: int | None = None, val_fraction: float | None = None,
                      scanner: str | None = None, geometry: str | None = None,
                      dtype=torch.float32, device: str | torch.device = "cpu") -> ImagingTask:
    """Build ``name`` (one of :data:`IMAGING_TASKS`) on ``device``; see the module docstring.
    Images, measurements and the network live on ``device``; the noise is drawn on the CPU (same
    draws on every device). ``data``: a folder of images (added to the training images) or an
    HDF5 file (the training data, ``val_fraction`` of it held out for validation; ``n_train``,
    ``patch`` and ``test_size`` then do not apply). ``unrolled-ct`` only: ``scanner`` (a preset of
    :mod:`lifted_inverse.operators.scanners`, its geometry and angle count) or ``geometry``
    (``'parallel'``, the default, or ``'fan'``: the registry's fan-beam default), 60 angles."""
    if name not in IMAGING_TASKS:
        raise ValueError(f"task: expected one of {IMAGING_TASKS}, got {name!r}")
    if noise is not None and not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise: expected a finite level >= 0, got {noise}")
    kind = _data_kind(data)
    if name != "unrolled-ct":
        for key, value in (("scanner", scanner), ("geometry", geometry)):
            if value is not None:
                raise ValueError(f"{key}: a CT geometry, for --task unrolled-ct only")
    if scanner is not None and geometry is not None:
        raise ValueError("scanner: give a scanner or a geometry, not both (a scanner fixes its geometry)")
    if geometry not in (None, "parallel", "fan"):
        raise ValueError(f"geometry: expected parallel or fan, got {geometry!r}")
    if kind == "file":
        for key, value in (("n_train", n_train), ("patch", patch), ("test_size", test_size),
                           ("scanner", scanner), ("geometry", geometry)):
            if value is not None:
                raise ValueError(f"{key}: does not apply to --data FILE (the file holds the training "
                                 "samples, their size and the validation split)")
    elif val_fraction is not None:
        raise ValueError("val_fraction: applies to --data FILE.h5 only (the validation split of the file)")
    if name == "unrolled-ct":
        size = test_size or 128
        spec = {"name": "ct", "n_angles": 60}     # detectors: the diagonal (registry default)
        if geometry == "fan":
            spec["geometry"] = "fan"
        elif scanner is not None:
            from ..operators.scanners import scanner_spec

            spec = scanner_spec(scanner, size)
        level = 0.01 if noise is None else float(noise)
        noise_d = {"sigma": level, "relative": True}
        if kind != "file":
            n = (64 if n_train is None else n_train)
            photos = _training_images(data, size)
            n_ell = max(n - len(photos), n // 2)
            x_train = torch.cat([random_ellipses(n_ell, size, seed=seed), torch.stack(photos)])[:max(n, 1)]
            test_names, test_x = _test_images(name, (1, size, size))
            val_x = list(random_ellipses(2, size, seed=2 * 10**6)) + [builtin_image(VALIDATION_IMAGES[0], size)]
        # λ = 0.01: the clip level of the dual states sets the strength of the initial
        # regulariser; the denoisers' 0.1 starts the network below FBP (docs/results.md)
        net = UnrolledProximalNet(1, (16 if features is None else features), (8 if layers is None else layers), lam=0.01, tied=tied, seed=seed,
                                  fidelity="ramp")
        baseline_name = "fbp"
    else:
        size = test_size or 256
        if name == "pnn-denoise":
            spec = {"name": "denoise"}
            level = 0.1 if noise is None else float(noise)
            noise_d = {"sigma": level, "relative": False}
            # K = 20 layers, F = 24 features: shallower PNNs peak after a few epochs (the limit is
            # depth, not data; docs/results.md)
            net = PNN(1, (24 if features is None else features), (20 if layers is None else layers), lam=0.1, tied=tied, seed=seed)
        else:
            spec = {"name": "blur", "kernel": "gaussian", "boundary": "circular"}
            level = 0.01 if noise is None else float(noise)
            noise_d = {"sigma": level, "relative": False}
            net = UnrolledProximalNet(1, (16 if features is None else features), (8 if layers is None else layers), lam=0.1, tied=tied, seed=seed)
        if kind != "file":
            x_train = _patches(_training_images(data), (40 if patch is None else patch),
                               (512 if n_train is None else n_train), seed)
            test_names, test_x = _test_images(name, (1, size, size))
            val_x = [builtin_image(t, size) for t in VALIDATION_IMAGES]
        baseline_name = "tv"
    device = checked_device(device)
    net = net.to(dtype=dtype, device=device)
    operators: dict = {}        # one operator per image shape, handed to the task

    def operator_for(shape):
        return cached_operator(operators, spec, shape)

    source = info = None
    if kind == "file":
        from .imaging_data import load_file_data

        def file_operator(file_spec, shape):
            nonlocal spec
            spec = file_spec
            return operator_for(shape)

        loaded = load_file_data(data, task=name, task_spec=spec, task_noise=noise_d,
                                noise_given=noise is not None, val_fraction=val_fraction, seed=seed,
                                operator_for=file_operator, dtype=dtype, device=device,
                                test_images=lambda shape: _test_images(name, shape))
        source, info, noise_d = loaded.source, loaded.info, loaded.noise
        x_train = y_train = None
        test_names, test_x, test_y = loaded.test_names, loaded.test_x, loaded.test_y
        val_x, val_y = loaded.val_x, loaded.val_y
        level = noise_d["sigma"]
    else:
        x_train = x_train.to(dtype=dtype, device=device)
        test_x = [t.to(dtype=dtype, device=device) for t in test_x]
        val_x = [t.to(dtype=dtype, device=device) for t in val_x]
        y_train = _measure_batched(x_train, operator_for(x_train.shape[1:]), noise_d, seed)
        test_y = [measure(x[None], operator_for(x.shape), noise_d, 10**5 + i)[0] for i, x in enumerate(test_x)]
        val_y = [measure(x[None], operator_for(x.shape), noise_d, 2 * 10**5 + i)[0]
                 for i, x in enumerate(val_x)]
    if baseline_name == "fbp":
        baseline = lambda y, A: A.fbp(y)
    else:
        # α tuned on the first training pairs (absolute noise level: relative to rms(Ax) otherwise)
        k = min(8, len(x_train) if source is None else source.n)
        y_tune, x_tune = (y_train[:k], x_train[:k]) if source is None else source.batch(torch.arange(k))
        A_tune = operator_for(tuple(x_tune.shape[1:]))
        sigma_abs = level if not noise_d["relative"] else \
            level * float(((y_tune if A_tune is None else A_tune(x_tune)).flatten(1).pow(2).mean(1).sqrt()).mean())
        baseline = TVBaseline(x_tune, y_tune, A_tune, sigma_abs)
    # per task (over IMAGING_PRESETS; the reasons and the comparisons: docs/results.md): CT has few,
    # large training images (mini-batch 8) and weights its x-state couplings by ρ = 3; the
    # 20-layer PNN takes a smaller Adam step
    own = {"pnn-denoise": {("bregman", "adam"): {"lr": 1e-3}},
           "unrolled-ct": {"all": {"batch_size": 8}, "lifted": {"rho": 3.0}},
           "unrolled-deblur": {}}[name]
    presets = {key: {**IMAGING_PRESETS.get(key, {}), **own.get(key, {})}
               for key in {*IMAGING_PRESETS, *own}}
    if source is not None and not source.fresh:
        # the file's measurements are the training data: none is redrawn, and the config says so
        presets["all"] = {**presets.get("all", {}), "fresh_noise": False}
    return ImagingTask(name, net, x_train, y_train, test_x, test_y, test_names, spec, noise_d,
                       baseline_name, baseline, presets=presets, val_x=val_x, val_y=val_y,
                       _operators=operators, source=source, data_info=info)


def _factory(name):
    def make(config):
        extra = dict(getattr(config, "extra", {}) or {})
        unknown = set(extra) - {"features", "layers", "n_train", "patch", "test_size", "tied", "val_fraction",
                                "scanner", "geometry"}
        if unknown:
            raise ValueError(f"{min(unknown)}: does not apply to task {name!r}")
        for key in ("features", "layers", "n_train"):
            if key in extra and (isinstance(extra[key], bool) or int(extra[key]) != extra[key]
                                 or extra[key] < 1):
                raise ValueError(f"{key}: must be a positive integer, got {extra[key]!r}")
        return make_imaging_task(name, noise=config.noise, data=config.data, seed=config.seed,
                                 dtype=config.dtype, device=config.device, **extra)
    return make


for _name in IMAGING_TASKS:
    register_task(_name)(_factory(_name))
