"""``lifted-inverse invert`` end to end (small sizes)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lifted_inverse.cli import main
from lifted_inverse.inversion import save_checkpoint

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
    assert (out / "inversion.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["inversion.png", "metrics.json"]
    assert "lifted PSNR" in capsys.readouterr().out


def test_invert_checkpoint_with_discrepancy_principle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 60), nn.ReLU())
    path = tmp_path / "net.pt"
    save_checkpoint(model, (1, 12, 12), path)
    out = tmp_path / "run"
    code = main(["invert", "--model", str(path), "--image", "shepp_logan", "--alpha", "discrepancy",
                 "--iterations", "60", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics) and metrics["input_shape"] == [1, 12, 12]
    if metrics["discrepancy_satisfied"]:
        assert metrics["residuals"][-1] <= 1.5 * metrics["noise_norm"]
        assert all(r > 1.5 * metrics["noise_norm"] for r in metrics["residuals"][:-1])


def test_invert_reports_clear_errors(tmp_path, capsys):
    path = tmp_path / "gelu.pt"
    save_checkpoint(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.GELU()), (1, 8, 8), path)
    assert main(["invert", "--model", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "proximal" in err and "GELU" in err
    assert main(["invert", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["invert", "--model", "perceptron", "--size", "8", "--outputs", "32", "--alpha", "abc",
                 "--out", str(tmp_path / "c")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["invert", "--model", "perceptron", "--device", "gpu0", "--out", str(tmp_path / "d")]) == 2
    assert "--device: not a device" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
