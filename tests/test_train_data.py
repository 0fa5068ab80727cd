"""``train --data FILE.h5`` for the imaging tasks: the file's pairs give the same training as the
same images and measurements held in memory, read lazily per mini-batch; clean-only files get
fresh per-sample noise per epoch; deepinv layout; bad files and options fail with one line naming
the argument (exit 2)."""
import json
import re

import h5py
import numpy as np
import pytest
import torch

from lifted_inverse.cli import main
from lifted_inverse.datasets import EllipseDataset, make_measurements
from lifted_inverse.datasets.hdf5 import MeasurementDataset
from lifted_inverse.networks.unrolled import UnrolledProximalNet
from lifted_inverse.operators import GaussianNoise, make_operator
from lifted_inverse.training import TrainConfig, train
from lifted_inverse.training.imaging import ImagingTask, make_imaging_task
from lifted_inverse.training.tasks import seeded_split
from lifted_inverse.training.trainer import Trainer, resolve_for

SIZE, N = 24, 10
NET = {"layers": 2, "features": 2}


@pytest.fixture
def ct_file(tmp_path):
    """(x, y, A, path): ellipses, their 8-angle CT measurements with 1 % relative noise, written in
    one batch (so the noise stream is the one of a single call)."""
    ds = EllipseDataset(N, SIZE, seed=0)
    A = make_operator("ct", (1, SIZE, SIZE), n_angles=8)
    path = make_measurements(ds, A, GaussianNoise(0.01, relative=True, seed=3), tmp_path / "ct.h5",
                             batch_size=N)
    x = torch.stack([ds[i] for i in range(N)])
    y = GaussianNoise(0.01, relative=True, seed=3)(A(x))
    return x, y, A, path


def _in_memory_twin(task_file: ImagingTask, x, y) -> ImagingTask:
    """The same task with the training images and measurements held in memory (x, y computed
    directly, not read from the file), the same network, split, test and presets."""
    ids, val = seeded_split(N, 0.1, 0)       # the documented split of the file's samples
    assert torch.equal(ids, task_file.source.ids)
    net = UnrolledProximalNet(1, 2, 2, lam=0.01, seed=0, fidelity="ramp")
    return ImagingTask(task_file.name, net, x[ids], y[ids], task_file.test_x, task_file.test_y,
                       task_file.test_names, task_file.operator_spec, task_file.noise, "fbp",
                       lambda yy, A: A.fbp(yy), presets=task_file.presets, val_x=list(x[val]),
                       val_y=list(y[val]))


@pytest.mark.parametrize("method", ["bregman", "backprop"])
def test_file_training_equals_training_on_the_images_directly(ct_file, method):
    x, y, _, path = ct_file
    assert torch.equal(MeasurementDataset(path).read(range(N))[1], y)   # the file holds A x + e
    task = make_imaging_task("unrolled-ct", data=str(path), **NET)
    twin = _in_memory_twin(task, x, y)
    assert task.operator_spec == make_operator("ct", (1, SIZE, SIZE), n_angles=8)._operator_spec
    assert task.n_train == twin.n_train == N - 1 and task.describe()["data"]["n_val"] == 1
    config = TrainConfig(method=method, solver="adam", lr=1e-2, epochs=1, batch_size=4)
    # the first batch: the same pairs and the same loss
    steps = [Trainer(t, resolve_for(t, config)) for t in (task, twin)]
    first = torch.randperm(N - 1, generator=torch.Generator().manual_seed(0))[:4]
    (yf, xf), (ym, xm) = task.train_batch(first), twin.train_batch(first)
    assert torch.equal(yf, ym) and torch.equal(xf, xm)
    assert steps[0].step(first) == steps[1].step(first)
    # whole runs: same objectives, same selection (fresh steppers: the step above trained)
    task = make_imaging_task("unrolled-ct", data=str(path), **NET)
    a, b = train(task, config), train(_in_memory_twin(task, x, y), config)
    assert a["train_objective"] == b["train_objective"]
    assert a["test_psnr"] == b["test_psnr"] and a["selected_epoch"] == b["selected_epoch"]
    assert a["config"]["fresh_noise"] is False        # the file's measurements are kept
    assert a["description"]["data"]["operator"] == "file" and a["description"]["data"]["noise"] == "file"


def test_training_reads_only_mini_batches(ct_file, monkeypatch):
    """Training reads the file a mini-batch at a time: no read asks for more than the batch."""
    _, _, _, path = ct_file
    task = make_imaging_task("unrolled-ct", data=str(path), **NET)
    sizes = []
    original = MeasurementDataset.read

    def spy(self, indices):
        sizes.append(len(indices))
        return original(self, indices)
    monkeypatch.setattr(MeasurementDataset, "read", spy)
    train(task, TrainConfig(method="bregman", solver="adam", epochs=2, batch_size=3))
    assert sizes and max(sizes) <= 3 and sum(sizes) == 2 * (N - 1)


def test_clean_only_file_gets_fresh_noise_per_sample_and_epoch(ct_file):
    x, _, A, path = ct_file
    with h5py.File(path, "a") as f:
        del f["y"]
    task = make_imaging_task("unrolled-ct", data=str(path), noise=0.05, **NET)
    assert task.source.fresh and task.describe()["data"]["noise"] == "user"
    ids = torch.tensor([0, 3, 5])
    y0, x0 = task.train_batch(ids)
    assert torch.equal(x0, x[task.source.ids[ids]])
    resid = y0 - A(x0)
    rel = resid.flatten(1).pow(2).mean(1).sqrt() / A(x0).flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rel, torch.full_like(rel, 0.05), rtol=0.3)
    # a sample's draw does not depend on the batch it is in; the next epoch draws anew
    assert torch.equal(task.train_batch(torch.tensor([5, 0]))[0][1], y0[0])
    task.new_epoch(1, 0)
    assert not torch.equal(task.train_batch(ids)[0], y0)
    r = train(task, TrainConfig(method="backprop", epochs=1, batch_size=4))
    assert r["config"]["fresh_noise"] is True


def test_deepinv_layout_round_trip_through_the_cli(tmp_path):
    out = tmp_path / "dv.h5"
    assert main(["data", "--dataset", "ellipses", "--operator", "ct", "--n", "10", "--size", "24",
                 "--angles", "8", "--layout", "deepinv", "--test-fraction", "0.3", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert {k: f[k].shape[0] for k in f} == {"x_train": 7, "y_train": 7, "x_test": 3, "y_test": 3}
        assert all(f[k].fletcher32 for k in f)
    assert main(["train", "--task", "unrolled-ct", "--data", str(out), "--layers", "2", "--features", "2",
                 "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.3", "--threads", "1",
                 "--out", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    data = m["description"]["data"]
    assert data["layout"] == "deepinv" and data["test"] == "file" and data["n_test"] == 3
    assert data["n_train"] == 5 and data["n_val"] == 2
    assert set(m["baseline_psnr_per_image"]) == {"test0", "test1", "test2"}


def test_a_foreign_deepinv_file_takes_the_tasks_operator(tmp_path):
    """A file without this project's attributes: the task's operator, checked against the shapes."""
    x = torch.rand(6, 1, 16, 16)
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x_train"], f["y_train"] = x.numpy(), (x + 0.1 * torch.randn(x.shape)).numpy()
        f.attrs["operator"] = "Denoising"      # deepinv records the class name only
    task = make_imaging_task("pnn-denoise", data=str(path), **NET)
    assert task.describe()["data"]["operator"] == "task" and task.train_operator is None
    assert task.describe()["data"]["test"] == "builtin" and task.test_x[0].shape == (1, 16, 16)


def test_a_folder_still_adds_training_images(tmp_path):
    from skimage.io import imsave

    folder = tmp_path / "imgs"
    folder.mkdir()
    imsave(folder / "a.png", (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8))
    task = make_imaging_task("pnn-denoise", data=str(folder), n_train=4, patch=16, test_size=32, **NET)
    assert task.source is None and task.x_train.shape == (4, 1, 16, 16)


def _bad(tmp_path, name, build):
    path = tmp_path / name
    build(path)
    return str(path)


def test_bad_files_and_options_fail_with_one_line_naming_the_argument(tmp_path, ct_file, capsys):
    _, _, _, good = ct_file
    run = ["train", "--task", "unrolled-ct", "--layers", "2", "--features", "2", "--epochs", "1",
           "--out", str(tmp_path / "r")]

    def nokey(p):
        with h5py.File(p, "w") as f:
            f["images"] = np.zeros((4, 1, 8, 8), np.float32)

    def wrong_shape(p):       # measurements that do not fit the recorded operator
        with h5py.File(good) as src, h5py.File(p, "w") as f:
            f["x"], f["y"] = src["x"][...], src["y"][:, :, :4]
            f.attrs.update(src.attrs)

    def not_images(p):
        with h5py.File(p, "w") as f:
            f["x"] = np.zeros((4, 64), np.float32)

    def truncated(p):
        data = good.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    def nan_sample(p):
        p.write_bytes(good.read_bytes())
        with h5py.File(p, "a") as f:
            f["x"][2, 0, 3, 3] = np.nan

    def flipped(p):           # one byte changed in the middle of sample 4's measurement
        p.write_bytes(good.read_bytes())
        with h5py.File(p) as f:
            info = f["y"].id.get_chunk_info(4)
        data = bytearray(p.read_bytes())
        data[info.byte_offset + info.size // 2] ^= 0xFF
        p.write_bytes(bytes(data))

    cases = [
        ([*run, "--data", _bad(tmp_path, "nokey.h5", nokey)], "--data:.*no dataset"),
        ([*run, "--data", _bad(tmp_path, "shape.h5", wrong_shape)], "--data:.*(shape|maps)"),
        ([*run, "--data", _bad(tmp_path, "flat.h5", not_images)], "--data:.*expected images"),
        ([*run, "--data", _bad(tmp_path, "trunc.h5", truncated)], "--data:.*trunc.h5"),
        ([*run, "--data", _bad(tmp_path, "text.h5", lambda p: p.write_text("x,y\n1,2\n"))],
         "--data:.*not an HDF5 file"),
        ([*run, "--data", str(tmp_path / "absent.h5")], "--data: no such"),
        ([*run, "--data", str(good), "--batch-size", "9", "--val-fraction", "0.5",
          "--out", str(tmp_path / "n")], None),
        ([*run, "--data", _bad(tmp_path, "flip.h5", flipped), "--batch-size", "0", "--method", "backprop"],
         r"--data: cannot read .*dataset 'y' in .*flip.h5.*checksum mismatch"),
        ([*run, "--data", _bad(tmp_path, "nan.h5", nan_sample), "--batch-size", "0", "--method",
          "backprop"], "--data:.*'x'.*NaN"),
        ([*run, "--data", str(good), "--n-train", "4"], "--n-train: does not apply to --data FILE"),
        ([*run, "--data", str(good), "--val-fraction", "1.5"], "--val-fraction: expected a fraction"),
        ([*run, "--val-fraction", "0.2"], "--val-fraction: applies to --data FILE.h5 only"),
        ([*run, "--data", str(good), "--noise", "0.1"], "--noise: the measurements of --data"),
        ([*run[:2], "pnn-denoise", *run[3:], "--data", str(good)],
         "--data:.*'ct' measurements; task 'pnn-denoise' trains on 'denoise'"),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        if message is None:
            assert code == 0, err
            continue
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1, err
        assert re.search(message, err), (message, err)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["bregman", "backprop"])
def test_file_training_on_cuda_matches_cpu(ct_file, method):
    """Batches read from the file go to the task's device; same objectives as on the CPU (float64)."""
    _, _, _, path = ct_file
    runs = {}
    for device in ("cuda", "cpu"):
        task = make_imaging_task("unrolled-ct", data=str(path), dtype=torch.float64, device=device, **NET)
        assert task.train_batch(torch.tensor([0, 1]))[0].device.type == device
        runs[device] = train(task, TrainConfig(method=method, solver="adam", lr=1e-2, epochs=2, batch_size=4))
    assert runs["cuda"]["train_objective"] == pytest.approx(runs["cpu"]["train_objective"], rel=1e-8)
