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

The training measurements are drawn once (seeded) so lifted and backprop training see the same
pairs. ``train_imaging`` returns a metrics dict and writes ``metrics.json``, ``checkpoint.pt``,
``reconstructions.png`` and ``psnr_vs_time.png``.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
from ..io import atomic_path, atomic_write_text
from ..lifted import LiftedObjective, LiftedSolver, StateStore, lift
from ..lifted.solvers import BACKTRACKING_SOLVERS as LIFTED_SOLVERS
from ..metrics import psnr, ssim
from ..networks.pnn import PNN
from ..networks.unrolled import UnrolledProximalNet
from ..operators import GaussianNoise, Identity, operator_from_spec
from ..operators.base import LinearOperator
from ..runtime import checked_device
from .tasks import register_task

IMAGING_TASKS = ("pnn-denoise", "unrolled-deblur", "unrolled-ct")
DENOISE_LEVELS = (0.05, 0.1, 0.2)


@dataclass
class ImagingTask:
    """Data, network and scoring of one imaging task.

    ``operator(shape) -> A`` builds the forward operator for images of ``shape = (C, H, W)``
    (None for the PNN, which takes the noisy image itself). ``x_train`` (N, C, P, P) clean,
    ``y_train`` their measurements; ``test_x``/``test_y`` lists of whole test images (C, H, W)
    and measurements; ``baseline(y, A) -> x`` the classical reconstruction.
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
    defaults: dict = field(default_factory=dict)
    val_x: list = field(default_factory=list)
    val_y: list = field(default_factory=list)
    _operators: dict = field(default_factory=dict, repr=False)

    def operator(self, shape) -> LinearOperator | None:
        """The operator for images of ``shape``, built once per shape (its power-iterated norm,
        sparse matrix or FFT kernel are cached on the instance and reused by every batch)."""
        return cached_operator(self._operators, self.operator_spec, shape)

    def measure_train(self, seed: int) -> torch.Tensor:
        """Fresh measurements ``A x_i + e_i`` of the training images, noise seeded by ``seed`` (a new
        draw per epoch is the usual noise augmentation of denoiser training)."""
        return _measure_batched(self.x_train, self.operator(tuple(self.x_train.shape[1:])), self.noise, seed)

    def apply(self, y: torch.Tensor, A: LinearOperator | None) -> torch.Tensor:
        """The network on a batch of measurements."""
        return self.net(y) if A is None else self.net(y, A)

    @torch.no_grad()
    def evaluate(self, recon: Callable | None = None, split: str = "test") -> dict:
        """Mean PSNR/SSIM (data range 1) of the network (or of ``recon(y, A)``) on the held-out
        ``'test'`` images or the ``'val'`` images (model selection; never seen in training)."""
        recon = recon or self.apply
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


def _tv_baseline(x_tune, y_tune, A_tune, sigma_abs):
    from ..reconstruction import tv_pdhg

    def solve(y, A, alpha):
        A = A if A is not None else Identity(tuple(y.shape[1:]))
        return tv_pdhg(A, y, alpha, nonneg=True, max_iter=200, tol=1e-5).x

    grid = [sigma_abs * c for c in (0.3, 0.5, 0.8, 1.2, 1.8)]
    alpha = _tune_alpha(solve, x_tune, y_tune, A_tune, grid)
    return (lambda y, A: solve(y, A, alpha)), alpha


def make_imaging_task(name: str, *, noise: float | None = None, data: str | None = None,
                      seed: int = 0, n_train: int | None = None, patch: int = 40,
                      features: int | None = None, layers: int | None = None, tied: bool = False,
                      test_size: int | None = None, dtype=torch.float32,
                      device: str | torch.device = "cpu") -> ImagingTask:
    """Build ``name`` (one of :data:`IMAGING_TASKS`) on ``device``; see the module docstring.
    Images, measurements and the network live on ``device``; the noise is drawn on the CPU (same
    draws on every device)."""
    if name not in IMAGING_TASKS:
        raise ValueError(f"task: expected one of {IMAGING_TASKS}, got {name!r}")
    if noise is not None and not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise: expected a finite level >= 0, got {noise}")
    if name == "unrolled-ct":
        size = test_size or 128
        spec = {"name": "ct", "angles": 60, "detectors": "full"}
        level = 0.01 if noise is None else float(noise)
        noise_d = {"sigma": level, "relative": True}
        n = n_train or 64
        photos = _training_images(data, size)
        n_ell = max(n - len(photos), n // 2)
        x_train = torch.cat([random_ellipses(n_ell, size, seed=seed), torch.stack(photos)])[:max(n, 1)]
        test_names = [f"ellipse{i}" for i in range(4)] + ["shepp_logan", *DEFAULT_TEST_IMAGES]
        test_x = list(random_ellipses(4, size, seed=10**6)) + [shepp_logan(size)] + \
            [builtin_image(t, size) for t in DEFAULT_TEST_IMAGES]
        val_x = list(random_ellipses(2, size, seed=2 * 10**6)) + [builtin_image(VALIDATION_IMAGES[0], size)]
        # λ = 0.01: the clip level of the dual states sets the strength of the initial
        # regulariser; 0.1 (the denoisers' value) starts at 26.1 dB, below FBP, 0.01 at 32.9 dB
        net = UnrolledProximalNet(1, features or 16, layers or 8, lam=0.01, tied=tied, seed=seed,
                                  fidelity="ramp")
        baseline_name = "fbp"
    else:
        size = test_size or 256
        if name == "pnn-denoise":
            spec = {"name": "denoise"}
            level = 0.1 if noise is None else float(noise)
            noise_d = {"sigma": level, "relative": False}
            # K = 20, F = 24: 420 s, validation-selected: backprop 30.37-30.41 dB, lifted 30.32 (two
            # state steps, the task's default below; one: 30.23), TV 30.10
            # (K = 10: 29.93-30.01 and 29.77-29.99, peaking after a few epochs: depth, not data)
            net = PNN(1, features or 24, layers or 20, lam=0.1, tied=tied, seed=seed)
        else:
            spec = {"name": "blur", "kernel": "gaussian", "boundary": "circular"}
            level = 0.01 if noise is None else float(noise)
            noise_d = {"sigma": level, "relative": False}
            net = UnrolledProximalNet(1, features or 16, layers or 8, lam=0.1, tied=tied, seed=seed)
        x_train = _patches(_training_images(data), patch, n_train or 512, seed)
        test_names = list(DEFAULT_TEST_IMAGES)
        test_x = [builtin_image(t, size) for t in DEFAULT_TEST_IMAGES]
        val_x = [builtin_image(t, size) for t in VALIDATION_IMAGES]
        baseline_name = "tv"
    device = checked_device(device)
    x_train = x_train.to(dtype=dtype, device=device)
    test_x = [t.to(dtype=dtype, device=device) for t in test_x]
    val_x = [t.to(dtype=dtype, device=device) for t in val_x]
    net = net.to(dtype=dtype, device=device)
    operators: dict = {}        # one operator per image shape, handed to the task

    def operator_for(shape):
        return cached_operator(operators, spec, shape)

    y_train = _measure_batched(x_train, operator_for(x_train.shape[1:]), noise_d, seed)
    test_y = [measure(x[None], operator_for(x.shape), noise_d, 10**5 + i)[0] for i, x in enumerate(test_x)]
    val_y = [measure(x[None], operator_for(x.shape), noise_d, 2 * 10**5 + i)[0] for i, x in enumerate(val_x)]
    if baseline_name == "fbp":
        baseline = lambda y, A: A.fbp(y)
        alpha = None
    else:
        k = min(8, len(x_train))
        baseline, alpha = _tv_baseline(x_train[:k], y_train[:k], operator_for(x_train.shape[1:]), level)
    task = ImagingTask(name, net, x_train, y_train, test_x, test_y, test_names, spec, noise_d,
                       baseline_name, baseline, val_x=val_x, val_y=val_y, _operators=operators)
    # mini-batch of the CLI: CT has few, large training images (batch 8: 35.3 dB in 420 s)
    task.defaults = {"baseline_alpha": alpha, "batch_size": 8 if name == "unrolled-ct" else 32}
    if name == "pnn-denoise":   # lifted Adam step: 1e-3 30.23 dB, 1.5e-3 30.18, 3e-3 30.14-30.16 (420 s)
        task.defaults["lr"] = {("bregman", "adam"): 1e-3}
        # two prox-gradient steps per state block: 30.32 dB against 30.23 with one (420 s; backprop
        # 30.41 side by side); smaller state steps lose (state_lr 0.5 / 0.25: 29.97 / 29.84)
        task.defaults["lifted"] = {"state_steps": 2}
    if name == "unrolled-ct":   # x-state weight ρ = 3 (420 s, seeds 0 / 1): 35.56 / 35.42 dB against backprop
        # 35.39 / 35.44 (two runs at a time); ρ = 1: 35.29 (seed 0, session 5) / 34.90; ρ = 0.3: 31.45 (seed 1)
        task.defaults["lifted"] = {"rho": 3.0}
    if name == "unrolled-deblur":   # over-relaxed state steps 1.9/ℓ (420 s, seeds 0 / 1): 30.39 / 30.52 dB
        # against 30.15 / 30.23 with 1/ℓ; backprop side by side 30.33 / 30.42
        task.defaults["lifted"] = {"state_lr": 1.9}
    return task


def _factory(name):
    def make(config):
        extra = dict(getattr(config, "extra", {}) or {})
        return make_imaging_task(name, noise=config.noise, data=config.data, seed=config.seed,
                                 dtype=config.dtype, device=config.device, **extra)
    return make


for _name in IMAGING_TASKS:
    register_task(_name)(_factory(_name))


# ---- training -------------------------------------------------------------------------------
@dataclass
class ImagingTrainConfig:
    """``method``: 'bregman' (lifted; ``lifted``: ``rho``, ``loss_weight`` of the objective and
    :class:`~lifted_inverse.lifted.LiftedSolver` options over :data:`LIFTED_DEFAULTS`) or 'backprop'
    (Adam). ``epochs`` and/or ``time_budget`` (seconds of training, evaluation excluded) stop
    training; ``eval_every``: test evaluation every so many epochs; ``fresh_noise``: a new noise
    draw of the training measurements every epoch (not for full-batch ``'bcd'``, whose states are
    tied to its fixed batch); ``select_best``: validate on the task's validation images after the
    first epoch and then every ``val_every_seconds`` of training time (validation excluded from the
    clock, like test evaluation) and return the weights with the best validation PSNR.
    ``lr_schedule``: ``'constant'``, or ``'cosine'``: Adam's step ``lr·½(1 + cos πt)`` at training
    progress ``t`` ∈ [0, 1] (the larger of the epoch and time-budget fractions)."""

    method: str = "bregman"
    solver: str = "adam"
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    seed: int = 0
    time_budget: float | None = None
    eval_every: int = 1
    lifted: dict = field(default_factory=dict)
    fresh_noise: bool = True
    select_best: bool = True
    val_every_seconds: float = 20.0
    lr_schedule: str = "constant"

    def validate(self):
        if self.method not in ("bregman", "backprop"):
            raise ValueError(f"method: imaging tasks train by 'bregman' or 'backprop', got {self.method!r}")
        allowed = LIFTED_SOLVERS if self.method == "bregman" else ("adam",)
        if self.solver not in allowed:
            raise ValueError(f"solver: {self.solver!r} not available for {self.method!r}; "
                             f"expected one of {list(allowed)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("epochs, batch_size, eval_every: expected positive integers")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule != "constant" and self.solver != "adam":
            raise ValueError(f"lr_schedule: {self.lr_schedule!r} schedules Adam's step; solver {self.solver!r} "
                             "adapts its own steps")

    def progress(self, epoch: float, seconds: float) -> float:
        """Training progress in [0, 1]: the larger of the epoch and time-budget fractions."""
        t = epoch / self.epochs
        if self.time_budget is not None:
            t = max(t, seconds / self.time_budget)
        return min(max(t, 0.0), 1.0)

    def scheduled_lr(self, lr: float, epoch: float, seconds: float) -> float:
        if self.lr_schedule == "cosine":
            return lr * 0.5 * (1.0 + math.cos(math.pi * self.progress(epoch, seconds)))
        return lr


LR_SCHEDULES = ("constant", "cosine")
#: lifted solver options of the imaging tasks: one backward Gauss–Seidel sweep over the states
#: per batch, for every solver (the output's residual reaches the first layer within one sweep;
#: ``inner_sweeps`` sets ISGM's inner sweeps or the other solvers' ``sweeps``), ISGM without its
#: proximal term (η = 0: the backtracked steps alone keep each W-step a descent step), τ_k
#: refreshed by two warm-started power iterations
LIFTED_DEFAULTS = {"state_order": "backward", "inner_sweeps": 1, "prox_weight": 0.0, "power_iterations": 2}


DEFAULT_LR = {("bregman", "adam"): 3e-3, ("bregman", "isgm"): 1e-2, ("bregman", "bcd"): 1e-2,
              ("backprop", "adam"): 1e-3}  # backprop 3e-3 → 1e-3: deblur 29.50 → 30.27 dB, PNN 29.97 → 30.01


class _BackpropTrainer:
    def __init__(self, task, lr):
        self.task = task
        self.opt = torch.optim.Adam(task.net.parameters(), lr=lr)

    def step(self, y, x, A):
        out = self.task.apply(y, A)
        loss = 0.5 * (out - x).flatten(1).pow(2).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.task.net.prox.refresh_steps()
        return float(loss.detach())


def train_imaging(task: ImagingTask, config: ImagingTrainConfig, out: str | Path | None = None,
                  progress: bool = False) -> dict:
    """Train ``task.net`` in place; returns metrics (``test_psnr``, ``test_ssim``, ``seconds``,
    ``seconds_per_epoch``, ``history`` of {epoch, seconds, objective, test_psnr}, baseline)."""
    config.validate()
    torch.manual_seed(config.seed)
    lr = config.lr or task.defaults.get("lr", {}).get((config.method, config.solver)) \
        or DEFAULT_LR[(config.method, config.solver)]
    n = task.x_train.shape[0]
    bs = n if config.solver == "bcd" else min(config.batch_size, n)
    A = task.operator(tuple(task.x_train.shape[1:]))
    if config.method == "bregman":
        lifted = {**LIFTED_DEFAULTS, "state_init": "store" if config.solver == "bcd" else "forward",
                  **task.defaults.get("lifted", {}), **config.lifted}     # the task's, then the caller's
        objective = LiftedObjective(lift(task.net, input_shape=tuple(task.y_train.shape[1:]), operator=A),
                                    "bregman", rho=lifted.pop("rho", 1.0), loss_weight=lifted.pop("loss_weight", 1.0))
        lifted["inner_sweeps" if config.solver == "isgm" else "sweeps"] = lifted.pop("inner_sweeps")
        trainer = LiftedSolver(objective, config.solver, lr=lr, **lifted)
        store = StateStore.from_forward(objective, task.y_train) if config.solver == "bcd" else None
        step, optimizer = (lambda y, x, A: trainer.step(y, x, store)), trainer.adam
    else:
        trainer = _BackpropTrainer(task, lr)
        step, optimizer = trainer.step, trainer.opt
    gen = torch.Generator().manual_seed(config.seed)
    first = task.evaluate()
    history = [{"epoch": 0, "seconds": 0.0, "objective": None, "test_psnr": first["test_psnr"],
                "test_ssim": first["test_ssim"]}]
    seconds, epoch = 0.0, 0
    select = config.select_best and bool(task.val_x)
    best = {"val_psnr": -math.inf, "epoch": 0, "state": None}
    last_val = -math.inf
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, desc=f"{task.name} {config.method}/{config.solver}")
    while epoch < config.epochs and (config.time_budget is None or seconds < config.time_budget):
        if epoch > 0 and config.fresh_noise and config.solver != "bcd":
            task.y_train = task.measure_train(seed=10**6 * (config.seed + 1) + 10**4 * epoch)
        t0 = time.perf_counter()
        perm = (torch.randperm(n, generator=gen) if bs < n else torch.arange(n)).to(task.x_train.device)
        values = []
        for s in range(0, n, bs):
            if optimizer is not None and config.lr_schedule != "constant":
                step_lr = config.scheduled_lr(lr, epoch + s / n, seconds + time.perf_counter() - t0)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
            ids = perm[s:s + bs]
            y, x = task.y_train[ids], task.x_train[ids]
            if config.solver == "bcd":
                y, x = task.y_train, task.x_train
            values.append(step(y, x, A))
            if config.time_budget is not None and seconds + time.perf_counter() - t0 >= config.time_budget:
                break
        seconds += time.perf_counter() - t0
        epoch += 1
        objective = sum(values) / len(values)
        if not math.isfinite(objective):
            raise FloatingPointError(f"training diverged at epoch {epoch}: objective {objective}")
        record = {"epoch": epoch, "seconds": seconds, "objective": objective}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            record.update({k: v for k, v in task.evaluate().items() if k != "test_psnr_per_image"})
        done = epoch >= config.epochs or (config.time_budget is not None and seconds >= config.time_budget)
        if select and (epoch == 1 or done or seconds - last_val >= config.val_every_seconds):
            record.update(task.evaluate(split="val"))
            last_val = seconds
            if record["val_psnr"] > best["val_psnr"]:
                best = {"val_psnr": record["val_psnr"], "epoch": epoch,
                        "state": copy.deepcopy(task.net.state_dict())}
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(psnr=f"{record.get('test_psnr', float('nan')):.2f}")
    if bar is not None:
        bar.close()
    if best["state"] is not None:
        task.net.load_state_dict(best["state"])   # the weights with the best validation PSNR
    final = task.evaluate()
    base = task.evaluate(task.baseline)
    noisy = {}
    if task.operator_spec["name"] == "denoise":
        noisy = task.evaluate(lambda y, A: y)
    result = {
        "task": task.name, "method": config.method, "solver": config.solver,
        "test_psnr": final["test_psnr"], "test_ssim": final["test_ssim"],
        "test_psnr_per_image": final["test_psnr_per_image"],
        "baseline": task.baseline_name, "baseline_psnr": base["test_psnr"],
        "baseline_ssim": base["test_ssim"], "baseline_psnr_per_image": base["test_psnr_per_image"],
        "baseline_alpha": task.defaults.get("baseline_alpha"),
        "noisy_psnr": noisy.get("test_psnr"),
        "seconds": seconds, "epochs": epoch, "seconds_per_epoch": seconds / max(epoch, 1),
        "selected_epoch": best["epoch"] if best["state"] is not None else epoch,
        "val_psnr": best["val_psnr"] if best["state"] is not None else None,
        "train_objective": [h["objective"] for h in history[1:]],
        "history": history, "noise": task.noise, "operator": task.operator_spec,
        "config": {**config.__dict__, "lr": lr,
                   "lifted": trainer.settings() if config.method == "bregman" else {}},
        "n_train": int(n), "network": dict(task.net.config), "device": str(task.x_train.device),
    }
    if out is not None:
        write_outputs(task, result, Path(out))
    return result


# ---- outputs ----------------------------------------------------------------------------------
def plot_psnr_vs_time(histories: dict, path: Path, baseline: float | None = None,
                      baseline_name: str = "baseline"):
    """Test PSNR against training wall-clock, one line per run (``{label: history}``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, hist in histories.items():
        pts = [(h["seconds"], h["test_psnr"]) for h in hist if h.get("test_psnr") is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=baseline_name)
    ax.set_xlabel("training wall-clock [s]")
    ax.set_ylabel("test PSNR [dB]")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_outputs(task: ImagingTask, result: dict, out: Path, others: dict | None = None) -> None:
    from ..networks.checkpoint import save_checkpoint
    from ..plotting import plot_reconstructions

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", task.net, task=task.name, operator=task.operator_spec,
                    description={"noise": task.noise}, config=result["config"], epoch=result["epochs"],
                    metrics={k: v for k, v in result.items() if isinstance(v, (int, float, str))})
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    x, y = task.test_x[0], task.test_y[0]
    A = task.operator(tuple(x.shape))
    with torch.no_grad():
        recs = {task.baseline_name: task.baseline(y[None], A)[0].cpu(),
                f"{result['method']}/{result['solver']}": task.apply(y[None], A)[0].cpu()}
    plot_reconstructions(x.cpu(), y.cpu(), recs, out / "reconstructions.png", data_range=1.0,
                         title=f"{task.name}: {task.test_names[0]} (held out)")
    label = f"{result['method']}/{result['solver']}"
    plot_psnr_vs_time({label: result["history"], **(others or {})}, out / "psnr_vs_time.png",
                      result["baseline_psnr"], task.baseline_name)


# ---- CLI --------------------------------------------------------------------------------------
def run_cli(args) -> int:
    """``lifted-inverse train --task {pnn-denoise,unrolled-deblur,unrolled-ct} …`` (called by
    :mod:`lifted_inverse.cli.train`). With ``--compare`` the other method is trained too on the
    same data for the same wall-clock, into ``OUT/<method>``, and ``OUT/psnr_vs_time.png``
    shows both curves."""
    method = args.method
    if method not in ("bregman", "backprop"):
        raise ValueError(f"--method: imaging tasks train by 'bregman' or 'backprop', got {method!r}")
    solver = args.solver or "adam"
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    extra = {k: v for k, v in (("features", args.features), ("layers", args.layers),
                               ("n_train", args.n_train)) if v is not None}
    out = Path(args.out)

    def build():
        return make_imaging_task(args.task, noise=args.noise, data=args.data, seed=args.seed,
                                 dtype=dtype, device=getattr(args, "device", "cpu"), **extra)

    def config(m, s):
        lifted = {k: v for k, v in (("inner_sweeps", args.inner_sweeps), ("state_steps", args.state_steps),
                                    ("state_lr", getattr(args, "state_lr", None)))
                  if v is not None} if m == "bregman" else {}
        return ImagingTrainConfig(method=m, solver=s, epochs=args.epochs,
                                  batch_size=args.batch_size or task.defaults["batch_size"],
                                  lr=args.lr, seed=args.seed,
                                  time_budget=args.time_budget, lifted=lifted,
                                  lr_schedule=getattr(args, "lr_schedule", "constant"))

    task = build()
    result = train_imaging(task, config(method, solver), out, progress=args.progress)
    print(f"{args.task} {method}/{solver}: test PSNR {result['test_psnr']:.2f} dB "
          f"(SSIM {result['test_ssim']:.4f}), {result['baseline']} {result['baseline_psnr']:.2f} dB, "
          f"{result['seconds_per_epoch']:.2f} s/epoch, {result['epochs']} epochs -> {out}")
    if getattr(args, "compare", False):
        other = "backprop" if method == "bregman" else "bregman"
        other_task = build()
        cfg = config(other, "adam")
        cfg.time_budget = result["seconds"]
        cfg.epochs = 10**6
        res2 = train_imaging(other_task, cfg, out / other)
        print(f"{args.task} {other}/adam (same {result['seconds']:.1f} s): test PSNR "
              f"{res2['test_psnr']:.2f} dB, {res2['seconds_per_epoch']:.2f} s/epoch")
        plot_psnr_vs_time({f"{method}/{solver}": result["history"], f"{other}/adam": res2["history"]},
                          out / "psnr_vs_time.png", result["baseline_psnr"], result["baseline"])
    return 0
