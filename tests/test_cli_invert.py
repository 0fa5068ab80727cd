"""``lifted-inverse invert`` end to end (small sizes)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lifted_inverse.cli import main
from lifted_inverse.jobs.invert import checkpoint_network
from lifted_inverse.networks import save_checkpoint
from lifted_inverse.networks.pnn import PNN

KEYS = {"psnr", "ssim", "baseline_psnr", "seconds", "baseline_seconds", "adam_psnr", "delta", "alpha"}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_invert_perceptron_writes_metrics_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["invert", "--model", "perceptron", "--size", "16", "--outputs", "128", "--image",
                 "shepp_logan", "--noise", "0.05", "--iterations", "200", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics)
    assert metrics["psnr"] > 18.0 and metrics["psnr"] > metrics["baseline_psnr"]
    assert metrics["alpha"] == pytest.approx(metrics["delta"])  # a priori α = 1·δ for the perceptron
    config = metrics["config"]
    assert config["outputs"] == 128 and config["sources"]["outputs"] == "user"
    assert config["regularizer"] == "tv" and config["sources"]["regularizer"] == "default"
    assert (out / "inversion.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["inversion.png", "metrics.json"]
    assert "lifted PSNR" in capsys.readouterr().out


def test_invert_checkpoint_with_discrepancy_principle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 60), nn.ReLU())
    path = tmp_path / "net.pt"
    save_checkpoint(path, model, input_shape=(1, 12, 12))
    out = tmp_path / "run"
    code = main(["invert", "--model", str(path), "--image", "shepp_logan", "--alpha", "discrepancy",
                 "--iterations", "60", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics) and metrics["input_shape"] == [1, 12, 12]
    assert metrics["config"]["alpha"] == "discrepancy" and metrics["config"]["size"] == 12
    if metrics["discrepancy_satisfied"]:
        assert metrics["residuals"][-1] <= 1.5 * metrics["noise_norm"]
        assert all(r > 1.5 * metrics["noise_norm"] for r in metrics["residuals"][:-1])


def test_invert_reports_clear_errors(tmp_path, capsys):
    path = tmp_path / "gelu.pt"
    save_checkpoint(path, nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.GELU()), input_shape=(1, 8, 8))
    assert main(["invert", "--model", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "proximal" in err and "GELU" in err
    assert main(["invert", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    save_checkpoint(tmp_path / "pnn.pt", PNN(features=2, layers=1), task="pnn-denoise")
    assert main(["invert", "--model", str(tmp_path / "pnn.pt"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--model:" in err and "holds a pnn network" in err and err.count("\n") == 1
    save_checkpoint(tmp_path / "wide.pt", nn.Sequential(nn.Linear(10, 4), nn.ReLU()), input_shape=(10,))
    assert main(["invert", "--model", str(tmp_path / "wide.pt"), "--out", str(tmp_path / "f")]) == 2
    assert "vectors of H² entries" in capsys.readouterr().err
    assert main(["invert", "--model", "perceptron", "--size", "8", "--outputs", "32", "--alpha", "abc",
                 "--out", str(tmp_path / "c")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["invert", "--model", "perceptron", "--device", "gpu0", "--out", str(tmp_path / "d")]) == 2
    assert "--device: not a device" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_invert_opens_a_trained_autoencoder_checkpoint_and_inverts_its_encoder(tmp_path):
    """``train --task digits-autoencoder`` then ``invert --model A/checkpoint.pt``: the encoder
    (the modules up to the code, recorded by the task) is inverted on an 8×8 digit."""
    train_out, out = tmp_path / "A", tmp_path / "B"
    assert main(["train", "--task", "digits-autoencoder", "--epochs", "2", "--out", str(train_out)]) == 0
    assert main(["invert", "--model", str(train_out / "checkpoint.pt"), "--iterations", "40",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics) and metrics["input_shape"] == [1, 8, 8] and metrics["image"] == "digit"
    assert math.isfinite(metrics["psnr"]) and metrics["iterations"] >= 1
    model, shape, task = checkpoint_network(str(train_out / "checkpoint.pt"))
    assert task == "digits-autoencoder" and shape == (1, 8, 8)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 32)   # the code, not the reconstruction
