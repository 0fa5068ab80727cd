"""Imaging tasks on the one trainer, end to end on tiny tasks: fresh noise per epoch, model
selection on the validation images, schedules, presets, devices, metrics keys."""
import math

import pytest
import torch

from lifted_inverse.datasets import builtin_image
from lifted_inverse.networks.pnn import PNN
from lifted_inverse.training import TrainConfig, train
from lifted_inverse.training.imaging import IMAGING_PRESETS, ImagingTask, make_imaging_task


def _tiny_task(seed=0):
    g = torch.Generator().manual_seed(seed)
    brick = builtin_image("brick", 64)
    tops = torch.randint(0, 64 - 12, (24, 2), generator=g)
    x = torch.stack([brick[:, a:a + 12, c:c + 12] for a, c in tops.tolist()])
    noise = {"sigma": 0.1, "relative": False}
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    test_x = [builtin_image("gravel", 24)]
    val_x = [builtin_image("grass", 24), builtin_image("coffee", 24)]
    test_y = [t + 0.1 * torch.randn(t.shape, generator=g) for t in test_x]
    val_y = [t + 0.1 * torch.randn(t.shape, generator=g) for t in val_x]
    return ImagingTask("pnn-denoise", PNN(features=3, layers=2, seed=1), x, y, test_x, test_y, ["gravel"],
                       {"name": "denoise"}, noise, "noisy", lambda yy, A: yy, val_x=val_x, val_y=val_y,
                       presets={k: dict(v) for k, v in IMAGING_PRESETS.items()})


def test_train_imaging_selects_the_best_validation_epoch_and_redraws_noise():
    task = _tiny_task()
    y0 = task.y_train.clone()
    r = train(task, TrainConfig(method="backprop", solver="adam", lr=3e-2, epochs=5, batch_size=8))
    vals = [(h["epoch"], h["val_psnr"]) for h in r["history"] if "val_psnr" in h]
    assert [e for e, _ in vals] == [1, 2, 3, 4, 5]
    best_epoch, best_val = max(vals, key=lambda ev: ev[1])
    assert r["selected_epoch"] == best_epoch and r["val_psnr"] == best_val
    # the returned network is the selected one
    assert abs(task.evaluate(split="val")["val_psnr"] - best_val) < 1e-9
    assert not torch.equal(task.y_train, y0)                      # a new noise draw after epoch 1
    assert (task.y_train - task.x_train).std() == pytest.approx(0.1, rel=0.15)
    for key in ("test_psnr", "test_ssim", "seconds", "history", "baseline_psnr"):
        assert key in r


def test_train_imaging_without_selection_keeps_the_last_weights():
    task = _tiny_task()
    y0 = task.y_train.clone()
    r = train(task, TrainConfig(method="backprop", solver="adam", lr=3e-2, epochs=3, batch_size=8,
                                select="last", fresh_noise=False))
    assert r["selected_epoch"] == 3
    assert torch.equal(task.y_train, y0)
    assert abs(task.evaluate(split="val")["val_psnr"] - r["history"][-1]["val_psnr"]) < 1e-9


def test_cosine_schedule_decays_adams_step_over_training(monkeypatch):
    from lifted_inverse.training import steps as step_module

    for method, cls in (("bregman", step_module.LiftedStep), ("backprop", step_module.BackpropStep)):
        lrs = []
        original = cls.set_lr

        def spy(self, lr, _original=original, _lrs=lrs):
            _lrs.append(lr)
            return _original(self, lr)
        monkeypatch.setattr(cls, "set_lr", spy)
        train(_tiny_task(), TrainConfig(method=method, solver="adam", lr=1e-2, epochs=4, batch_size=8,
                                        lr_schedule="cosine", select="last"))
        # 3 steps per epoch (24 patches, batch 8): lr·½(1 + cos(π·step/12))
        expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * i / 12)) for i in range(12)]
        assert lrs == pytest.approx(expected, rel=1e-9), method
    # the optimiser really uses the scheduled step
    task = _tiny_task()
    from lifted_inverse.training.trainer import Trainer, resolve_for
    trainer = Trainer(task, resolve_for(task, TrainConfig(method="bregman", solver="adam", lr=1e-2, epochs=1,
                                                           lr_schedule="cosine")))
    trainer.step.set_lr(2.5e-3)
    assert trainer.step.solver.adam.param_groups[0]["lr"] == 2.5e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        train(_tiny_task(), TrainConfig(method="bregman", solver="isgm", lr_schedule="cosine"))
    with pytest.raises(ValueError, match="lr_schedule"):
        train(_tiny_task(), TrainConfig(lr_schedule="linear"))


def test_task_presets_apply_and_the_caller_overrides_them():
    """The imaging presets (engine < all-imaging < the task's own < caller) reach the solver;
    metrics record what ran and where each value came from."""
    task = _tiny_task()
    task.presets["lifted"] = {**task.presets["lifted"], "state_steps": 2, "rho": 0.5}
    r = train(task, TrainConfig(method="bregman", solver="adam", lr=1e-2, epochs=1, batch_size=8, rho=0.7))
    ran = r["config"]
    assert ran["state_steps"] == 2 and ran["rho"] == 0.7 and ran["state_order"] == "backward"
    assert ran["sources"]["state_steps"] == "task" and ran["sources"]["rho"] == "user"
    lifted = lambda name: make_imaging_task(name, n_train=4, layers=2, features=2, test_size=32).presets["lifted"]
    assert lifted("pnn-denoise")["state_sweeps"] == "auto"
    assert lifted("unrolled-deblur")["state_lr"] == 1.9
    assert lifted("unrolled-ct")["rho"] == 3.0


def _train_on(device, name, method):
    """A tiny ``name`` task built on ``device`` (float64), trained two epochs by ``method``."""
    task = make_imaging_task(name, n_train=6, patch=16, layers=2, features=2, test_size=32,
                             dtype=torch.float64, device=device)
    assert task.x_train.device.type == torch.device(device).type
    assert all(p.device.type == torch.device(device).type for p in task.net.parameters())
    r = train(task, TrainConfig(method=method, solver="adam", lr=1e-2, epochs=2, batch_size=4))
    return r


def _assert_same_training(a, b):
    assert a["train_objective"] == pytest.approx(b["train_objective"], rel=1e-8)
    assert a["test_psnr"] == pytest.approx(b["test_psnr"], abs=1e-6)
    assert a["baseline_psnr"] == pytest.approx(b["baseline_psnr"], abs=1e-6)
    assert a["selected_epoch"] == b["selected_epoch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["pnn-denoise", "unrolled-deblur", "unrolled-ct"])
@pytest.mark.parametrize("method", ["bregman", "backprop"])
def test_cuda_imaging_training_matches_cpu(name, method):
    """Same data, noise draws and steps on CUDA as on the CPU (float64): same objectives and PSNRs."""
    gpu, cpu = _train_on("cuda", name, method), _train_on("cpu", name, method)
    assert gpu["device"].startswith("cuda") and cpu["device"] == "cpu"
    _assert_same_training(gpu, cpu)


def test_imaging_task_device_is_checked_and_recorded():
    r = _train_on("cpu", "pnn-denoise", "bregman")
    assert r["device"] == "cpu"
    _assert_same_training(r, _train_on(torch.device("cpu"), "pnn-denoise", "bregman"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda'.*not available"):
            make_imaging_task("pnn-denoise", n_train=4, layers=2, features=2, device="cuda")


@pytest.mark.parametrize("method", ["bregman", "backprop"])
def test_imaging_run_resumes_exactly_from_its_checkpoint(tmp_path, method):
    """train --epochs 1 --out A, then --epochs 2 --resume A/checkpoint.pt --out B: B's history has
    2 epochs, the first is A's, and B equals a 2-epoch run in one go."""
    import json

    from lifted_inverse.cli import main
    from lifted_inverse.networks.checkpoint import load_checkpoint

    base = ["train", "--task", "pnn-denoise", "--method", method, "--n-train", "8", "--layers", "2",
            "--features", "2", "--batch-size", "4", "--threads", "1"]
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "A")]) == 0
    assert main([*base, "--epochs", "2", "--resume", str(tmp_path / "A" / "checkpoint.pt"),
                 "--out", str(tmp_path / "B")]) == 0
    assert main([*base, "--epochs", "2", "--out", str(tmp_path / "C")]) == 0
    a, b, c = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ABC")
    assert len(b["history"]) == 2 and b["history"][0] == a["history"][0]
    assert b["train_objective"] == c["train_objective"]
    wb, wc = (load_checkpoint(tmp_path / d / "checkpoint.pt").trainer_state["last_model"] for d in "BC")
    assert all(torch.equal(wb[k], wc[k]) for k in wb)
    ck = load_checkpoint(tmp_path / "B" / "checkpoint.pt")
    assert ck.operator == {"name": "denoise"} and ck.task == "pnn-denoise"
    # another task's checkpoint, or other settings: one line, exit 2
    assert main(["train", "--task", "unrolled-deblur", "--n-train", "8", "--layers", "2", "--features", "2",
                 "--epochs", "2", "--resume", str(tmp_path / "A" / "checkpoint.pt"),
                 "--out", str(tmp_path / "D")]) == 2
    assert main([*base, "--epochs", "2", "--lr", "0.5", "--resume", str(tmp_path / "A" / "checkpoint.pt"),
                 "--out", str(tmp_path / "E")]) == 2
