import json

import h5py
import pytest
import torch

from lifted_inverse.cli import main
from lifted_inverse.datasets import MeasurementDataset


def _run(tmp_path, *extra):
    """Small run; the iterative solvers' options only where they apply (fbp and unrolled refuse
    them, tests/test_cli_flags.py)."""
    out = tmp_path / "out"
    method = extra[extra.index("--method") + 1] if "--method" in extra else "tv"
    iterative = ["--iterations", "30", "--no-progress"] if method in ("tv", "tikhonov") else []
    rc = main(["reconstruct", "--out", str(out), "--size", "32", *iterative, *extra])
    return rc, out


@pytest.mark.parametrize("operator,method", [("ct", "tv"), ("ct", "fbp"), ("denoise", "tv"),
                                             ("blur", "tikhonov")])
def test_reconstruct_end_to_end(tmp_path, operator, method):
    angles = ["--angles", "20"] if operator == "ct" else []
    rc, out = _run(tmp_path, "--operator", operator, "--method", method, "--image",
                   "shepp_logan" if operator == "ct" else "camera", *angles)
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["operator"] == operator and config["sources"]["size"] == "user" and config["size"] == 32
    assert config["angles"] == (20 if operator == "ct" else None)
    for key in ("psnr", "ssim", "seconds", "operator", "method", "noise", "alpha"):
        assert key in metrics
    assert metrics["operator"] == operator and metrics["method"] == method
    assert 10 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    assert (out / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    with h5py.File(out / "result.h5") as f:
        assert f["reconstruction"].shape == (1, 32, 32) == f["ground_truth"].shape
        assert json.loads(f.attrs["operator"])["class"]
        assert json.loads(f.attrs["metrics"])["psnr"] == pytest.approx(metrics["psnr"])
    if operator == "denoise":
        assert metrics["psnr"] > metrics["psnr_measurement"]
    assert not list(out.glob(".*tmp"))


def test_reconstruct_image_file_and_alpha(tmp_path):
    import numpy as np
    from skimage.io import imsave

    imsave(tmp_path / "img.png", (np.linspace(0, 255, 40 * 40).reshape(40, 40)).astype(np.uint8))
    rc, out = _run(tmp_path, "--operator", "denoise", "--image", str(tmp_path / "img.png"),
                   "--alpha", "0.05")
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["alpha"] == 0.05


@pytest.mark.parametrize("args,msg", [
    (["--image", "no_such_image"], "unknown built-in image"),
    (["--image", "/nowhere/missing.png"], "missing.png"),
    (["--noise", "-0.1"], "--noise"),
    (["--operator", "denoise", "--method", "fbp"], "fbp"),
    (["--operator", "ct", "--method", "unrolled"], "--checkpoint"),
])
def test_reconstruct_bad_input(tmp_path, capsys, args, msg):
    rc, _ = _run(tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err and len(err.splitlines()) == 1


def test_data_command(tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert main(["data", "--dataset", "ellipses", "--operator", "ct", "--n", "3", "--size", "24",
                 "--angles", "10", "--out", str(out)]) == 0
    ds = MeasurementDataset(out)
    assert len(ds) == 3 and ds[0][1].shape == (1, 10, 34)  # ceil(24 sqrt(2)) detectors
    assert ds.attrs["operator"]["spec"]["n_angles"] == 10
    A = ds.operator()  # the file's spec rebuilds the operator that made y
    _, y = ds[0]
    assert A.out_shape == (1, 10, 34) and y.shape == A.out_shape  # ceil(24 sqrt(2)) detectors
    assert ds.attrs["noise"]["relative"] is True
    assert ds.attrs["config"]["angles"] == 10 and ds.attrs["config"]["sources"]["noise"] == "default"
    out2 = tmp_path / "p.h5"
    assert main(["data", "--dataset", "patches", "--operator", "denoise", "--images", "camera,brick",
                 "--n", "4", "--size", "16", "--image-size", "64", "--out", str(out2)]) == 0
    assert MeasurementDataset(out2)[3][0].shape == (1, 16, 16)
    capsys.readouterr()
    assert main(["data", "--dataset", "folder", "--folder", str(tmp_path / "none"), "--out",
                 str(tmp_path / "x.h5")]) == 2
    assert "none" in capsys.readouterr().err
    assert main(["data", "--noise", "-1", "--out", str(tmp_path / "x.h5")]) == 2
    assert not (tmp_path / "x.h5").exists()


def test_train_unrolled_ct_then_reconstruct_with_it(tmp_path, monkeypatch):
    """``train --task unrolled-ct`` writes a checkpoint that ``reconstruct --method unrolled``
    applies with the scanner it was trained for (full-width detector from the checkpoint),
    reading the checkpoint once."""
    from lifted_inverse.networks import checkpoint

    reads = []
    real_load = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path, *a, **k: reads.append(path) or real_load(path, *a, **k))
    train_out = tmp_path / "train"
    assert main(["train", "--task", "unrolled-ct", "--method", "backprop", "--epochs", "1",
                 "--n-train", "4", "--features", "2", "--layers", "2",
                 "--out", str(train_out)]) == 0
    metrics = json.loads((train_out / "metrics.json").read_text())
    assert metrics["baseline"] == "fbp" and metrics["test_psnr"] > 10
    assert metrics["config"]["batch_size"] == 8  # the task's default mini-batch
    rc, out = _run(tmp_path, "--operator", "ct", "--method", "unrolled", "--image", "shepp_logan",
                   "--checkpoint", str(train_out / "checkpoint.pt"))
    assert rc == 0
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["network"] == "unrolled" and rec["psnr"] > 10
    assert len(reads) == 1
    with h5py.File(out / "result.h5") as f:
        assert json.loads(f.attrs["operator"])["out_shape"] == [1, 60, 46]  # ceil(32·√2) bins: as trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_reconstruct_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    rc, _ = _run(tmp_path, "--device", "cuda")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--device" in err and "CUDA is not available" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("operator,method", [("ct", "tv"), ("ct", "fbp"), ("blur", "tikhonov")])
def test_reconstruct_on_cuda_matches_cpu(tmp_path, operator, method):
    got = {}
    for device in ("cpu", "cuda"):
        angles = ["--angles", "20"] if operator == "ct" else []
        rc, out = _run(tmp_path / device, "--operator", operator, "--method", method, "--device", device,
                       "--image", "shepp_logan" if operator == "ct" else "camera", *angles)
        assert rc == 0
        got[device] = json.loads((out / "metrics.json").read_text())
    assert got["cuda"]["device"].startswith("cuda")
    assert got["cuda"]["psnr"] == pytest.approx(got["cpu"]["psnr"], abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda_then_reconstruct_on_cuda(tmp_path):
    train_out = tmp_path / "train"
    assert main(["train", "--task", "unrolled-ct", "--method", "bregman", "--epochs", "1", "--device", "cuda",
                 "--n-train", "4", "--features", "2", "--layers", "2", "--out", str(train_out)]) == 0
    assert json.loads((train_out / "metrics.json").read_text())["device"].startswith("cuda")
    got = {}
    for device in ("cpu", "cuda"):
        rc, out = _run(tmp_path / device, "--operator", "ct", "--method", "unrolled", "--image", "shepp_logan",
                       "--device", device, "--checkpoint", str(train_out / "checkpoint.pt"))
        assert rc == 0
        got[device] = json.loads((out / "metrics.json").read_text())["psnr"]
    assert got["cuda"] == pytest.approx(got["cpu"], abs=1e-4) and got["cpu"] > 10
