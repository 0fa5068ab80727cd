"""``lifted-inverse invert`` end to end (small sizes)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lifted_inverse.cli import main
from lifted_inverse.jobs.invert import checkpoint_network, read_target
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
    assert sorted(p.name for p in out.iterdir()) == ["inversion.png", "metrics.json", "result.h5"]
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
    err = capsys.readouterr().err
    assert "--model:" in err and "no such" in err
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


# ---- a user's own model and data (issue 16) ----------------------------------------------------
def _relu_mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 24), nn.ReLU()).eval()


FACTORY_SOURCE = '''
from torch import nn


def build():
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 24), nn.ReLU())
'''


def _result(out):
    import h5py

    with h5py.File(out / "result.h5", "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def _check_run(out, samples: int, simulated: bool):
    metrics = json.loads((out / "metrics.json").read_text())
    arrays, attrs = _result(out)
    assert arrays["lifted"].shape == (samples, 1, 8, 8) and arrays["target"].shape == (samples, 24)
    assert arrays["gradient_descent"].shape == arrays["adam"].shape == arrays["lifted"].shape
    assert attrs["alpha"] == pytest.approx(metrics["alpha"]) and attrs["model"] == metrics["model"]
    assert (out / "inversion.png").stat().st_size > 1000
    assert metrics["residual"] < 0.5 and metrics["samples"] == samples
    assert ("psnr" in metrics) == simulated and ("ground_truth" in arrays) == simulated
    return metrics, arrays


def test_invert_a_torch_export_archive_simulated_and_with_a_target(tmp_path, monkeypatch):
    model = _relu_mlp()
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), path)
    real_load = torch.load

    def weights_only_load(*args, **kwargs):   # the archive reader never unpickles objects
        assert kwargs.get("weights_only") is True, kwargs
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    out = tmp_path / "sim"
    assert main(["invert", "--model", str(path), "--image", "shepp_logan", "--iterations", "30",
                 "--out", str(out)]) == 0
    metrics, arrays = _check_run(out, 1, simulated=True)
    assert metrics["input_shape"] == [1, 8, 8] and math.isfinite(metrics["psnr"])
    # the user's output: two samples, as .npy; no ground truth, no PSNR
    import numpy as np

    images = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        target = model(images)
    np.save(tmp_path / "y.npy", target.numpy())
    out = tmp_path / "tgt"
    assert main(["invert", "--model", str(path), "--target", str(tmp_path / "y.npy"), "--iterations", "30",
                 "--out", str(out)]) == 0
    metrics, arrays = _check_run(out, 2, simulated=False)
    assert metrics["delta_estimated"] and np.allclose(arrays["target"], target.numpy())


def test_invert_a_factory_model_with_weights_simulated_and_with_a_target(tmp_path, monkeypatch):
    (tmp_path / "usernet.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "usernet", raising=False)
    model = nn.Sequential(*list(_relu_mlp())[1:])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    try:
        from safetensors.torch import save_file
        weights = tmp_path / "w.safetensors"
        save_file(state, weights)
    except ImportError:  # the optional reader: a weights-only state dict instead
        weights = tmp_path / "w.pt"
        torch.save(state, weights)
    out = tmp_path / "sim"
    assert main(["invert", "--model", "usernet:build", "--weights", str(weights), "--image", "shepp_logan",
                 "--iterations", "30", "--out", str(out)]) == 0
    _check_run(out, 1, simulated=True)
    with torch.no_grad():
        target = model(torch.rand(1, 64))
    torch.save(target[0], tmp_path / "y.pt")      # one output, without the batch axis
    import h5py

    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["target"] = target.numpy()
        f["other"] = target.numpy()
    out = tmp_path / "tgt"
    assert main(["invert", "--model", "usernet:build", "--weights", str(weights), "--target",
                 str(tmp_path / "y.h5"), "--iterations", "30", "--out", str(out)]) == 0
    _, arrays = _check_run(out, 1, simulated=False)
    assert torch.allclose(torch.as_tensor(arrays["target"]), target)
    assert torch.equal(read_target(str(tmp_path / "y.pt"), (24,), torch.float32), target)


def test_invert_a_layer_without_a_lifted_form_gets_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "bnnet.py").write_text("from torch import nn\n\n\ndef build():\n    return nn.Sequential("
                                       "nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU())\n")
    monkeypatch.chdir(tmp_path)
    assert main(["invert", "--model", "bnnet:build", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model: module 3 (BatchNorm1d): cannot be lifted; supported are" in err
    torch.manual_seed(0)
    path = tmp_path / "gelu.pt2"
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU())
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), path)
    assert main(["invert", "--model", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model: layer gelu (torch.ops.aten.gelu.default)" not in err
    assert "--model: layer gelu (aten.gelu) cannot be lifted; supported are linear" in err

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 64)

        def forward(self, x):
            return x + torch.relu(self.lin(x))

    torch.export.save(torch.export.export(Skip(), (torch.rand(1, 64),)), tmp_path / "skip.pt2")
    assert main(["invert", "--model", str(tmp_path / "skip.pt2"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model: layer add" in err and "skip connections" in err
    assert not any((tmp_path / d).exists() for d in ("a", "b", "n"))


def test_invert_user_input_errors_name_the_argument(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(_relu_mlp(), (torch.rand(1, 1, 8, 8),)), path)
    np.save(tmp_path / "short.npy", np.ones(23, dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.full(24, np.nan, dtype=np.float32))
    np.save(tmp_path / "neg.npy", -np.ones(24, dtype=np.float32))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    cases = [
        (["--target", str(tmp_path / "short.npy")], "--target: the network output has shape (24,)"),
        (["--target", str(tmp_path / "nan.npy")], "--target: contains NaN"),
        (["--target", str(tmp_path / "neg.npy")], "--target: values outside the range"),
        (["--target", str(tmp_path / "junk.h5")], "--target: cannot read"),
        (["--target", str(tmp_path / "missing.npy")], "--target: no such file"),
        (["--target", str(tmp_path / "short.npy"), "--image", "camera"], "--image:"),
        (["--weights", str(tmp_path / "short.npy")], "--weights: only a package.module:factory"),
    ]
    for extra, message in cases:
        assert main(["invert", "--model", str(path), *extra, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (extra, err)
    assert main(["invert", "--model", "nosuchpackage.mod:build", "--out", str(tmp_path / "x")]) == 2
    assert "--model: cannot import nosuchpackage.mod" in capsys.readouterr().err
    assert main(["invert", "--model", "perceptron", "--weights", "w.pt", "--out", str(tmp_path / "x")]) == 2
    assert "--weights:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_load_exported_matches_the_exported_program(tmp_path):
    from lifted_inverse.networks.importers import load_exported

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 10), nn.Tanh(), nn.Linear(10, 12), nn.Unflatten(1, (1, 3, 4)),
                          nn.Dropout(0.5), nn.Sigmoid()).eval()
    x = torch.rand(1, 1, 8, 8)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    seq, shape = load_exported(tmp_path / "m.pt2")
    assert shape == (1, 8, 8)
    assert torch.allclose(seq(x), model(x), atol=1e-6)
    assert [type(m).__name__ for m in seq] == ["Conv2d", "LeakyReLU", "Flatten", "Linear", "Tanh", "Linear",
                                               "Unflatten", "Sigmoid"]


def test_an_image_file_of_another_size_is_resized_only_when_asked(tmp_path, capsys):
    """The user's pixels are kept: an image file that does not match the model's input is an
    --image error unless --size asks for resizing."""
    from skimage.io import imsave
    import numpy as np

    image = tmp_path / "wide.png"
    imsave(image, (np.linspace(0, 255, 24 * 40).reshape(24, 40)).astype(np.uint8), check_contrast=False)
    out = tmp_path / "run"
    code = main(["invert", "--model", "perceptron", "--outputs", "64", "--image", str(image),
                 "--iterations", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--image" in err and "24x40" in err and "--size 64" in err
    assert not out.exists() or not any(out.iterdir())
    code = main(["invert", "--model", "perceptron", "--size", "16", "--outputs", "64", "--image", str(image),
                 "--iterations", "5", "--out", str(out)])
    assert code == 0
