"""``reconstruct --measurement``: the user's own measurement files (issue 16, deliverable 1)."""
import json

import h5py
import numpy as np
import pytest
import torch

from lifted_inverse.cli import main
from lifted_inverse.datasets import shepp_logan

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--size", "32", "--angles", "20"]


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """One shepp-logan CT pair written by ``lifted-inverse data``: what ``reconstruct --image``
    simulates with the same seed and noise."""
    path = tmp_path_factory.mktemp("data") / "one.h5"
    assert main(["data", "--dataset", "shepp-logan", "--operator", "ct", "--n", "1", *SMALL, "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """Two random-ellipse CT pairs written by ``lifted-inverse data``."""
    path = tmp_path_factory.mktemp("data") / "ct.h5"
    assert main(["data", "--dataset", "ellipses", "--operator", "ct", "--n", "2", *SMALL, "--out", str(path)]) == 0
    return path


def _result(out):
    with h5py.File(out / "result.h5") as f:
        return f["reconstruction"][()], json.loads(f.attrs["source"])


@pytest.mark.parametrize("method", ["fbp", "tv"])
def test_round_trip_data_file_equals_simulated(tmp_path, single_file, method):
    """data -> file -> reconstruct --measurement gives the reconstruction of reconstruct --image
    (same image, seed and noise; default alpha from the recorded noise level)."""
    iters = ["--iterations", "40", "--no-progress"] if method == "tv" else []
    assert main(["reconstruct", "--method", method, "--image", "shepp_logan", *SMALL, *iters,
                 "--out", str(tmp_path / "img")]) == 0
    assert main(["reconstruct", "--method", method, "--measurement", str(single_file), "--index", "0", *iters,
                 "--ground-truth", str(single_file), "--out", str(tmp_path / "file")]) == 0
    simulated, _ = _result(tmp_path / "img")
    read, source = _result(tmp_path / "file")
    assert read.shape == (1, *simulated.shape)
    np.testing.assert_array_equal(read[0], simulated)
    assert source["measurement"]["format"] == "lifted-inverse" and source["measurement"]["index"] == 0
    m_img = json.loads((tmp_path / "img" / "metrics.json").read_text())
    m_file = json.loads((tmp_path / "file" / "metrics.json").read_text())
    assert m_file["psnr"] == pytest.approx(m_img["psnr"], abs=1e-9)
    assert m_file["alpha"] == m_img["alpha"]


def test_every_sample_of_a_file_with_metrics_per_sample(tmp_path, data_file):
    out = tmp_path / "all"
    assert main(["reconstruct", "--method", "fbp", "--measurement", str(data_file), "--batch-size", "1",
                 "--ground-truth", str(data_file), "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_samples"] == 2
    for key in ("psnr", "ssim", "psnr_gt_range", "ssim_gt_range"):
        assert len(m["per_sample"][key]) == 2
        assert m[key] == pytest.approx(np.mean(m["per_sample"][key]))
    assert (out / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    # without a reference no metric is invented
    assert main(["reconstruct", "--method", "fbp", "--measurement", str(data_file),
                 "--out", str(tmp_path / "nogt"), "--no-progress"]) == 0
    m = json.loads((tmp_path / "nogt" / "metrics.json").read_text())
    assert not {"psnr", "ssim", "psnr_gt_range", "ssim_gt_range", "per_sample"} & set(m)


def test_deepinv_layout_and_batches(tmp_path, data_file):
    """deepinv-style x_test / y_test: operator from flags; batching does not change the result."""
    with h5py.File(data_file) as f:
        x, y = f["x"][()], f["y"][()]
    path = tmp_path / "deepinv.h5"
    with h5py.File(path, "w") as f:
        f["x_test"], f["y_test"] = x, y
        f["x_train"], f["y_train"] = x[:1], y[:1]
    outs = {}
    for bs in ("1", "2"):
        outs[bs] = tmp_path / f"b{bs}"
        assert main(["reconstruct", "--measurement", str(path), "--size", "32", "--angles", "20",
                     "--alpha", "0.5", "--iterations", "20", "--batch-size", bs, "--no-progress",
                     "--ground-truth", str(path), "--out", str(outs[bs])]) == 0
    a, source = _result(outs["1"])
    b, _ = _result(outs["2"])
    assert source["measurement"]["format"] == "deepinv" and source["measurement"]["key"] == "y_test"
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert json.loads((outs["2"] / "metrics.json").read_text())["psnr"] > 20


def _skimage_sinogram(n=128, n_angles=60):
    from skimage.transform import radon

    img = shepp_logan(n)[0].double().numpy()
    rr, cc = np.mgrid[:n, :n] - n // 2
    img = img * (rr ** 2 + cc ** 2 <= (n // 2 - 1) ** 2)  # zero outside the disc circle=True sees
    theta = np.arange(n_angles) * 180.0 / n_angles
    return img, theta, radon(img, theta, circle=True)  # (detectors, angles)


def test_skimage_radon_sinogram_reconstructs_like_our_own(tmp_path):
    """A sinogram of skimage.transform.radon(circle=True) saved as .npy, read with --layout
    detectors-angles, reconstructs by FBP within 0.5 dB of the project's FBP of its own
    simulated noiseless sinogram (same angles) of the same image."""
    from lifted_inverse.operators import Radon

    img, theta, sino = _skimage_sinogram()
    np.save(tmp_path / "sino.npy", sino)
    np.save(tmp_path / "gt.npy", img)
    np.savetxt(tmp_path / "theta.txt", theta)
    # the project's own sinogram in the same geometry (skimage's circle=True: 128 detectors)
    own = Radon(128, n_angles=60, n_detectors=128)(torch.from_numpy(img)[None, None])
    np.save(tmp_path / "own.npy", own[0, 0].numpy())
    runs = {"skimage": ["--measurement", str(tmp_path / "sino.npy"), "--layout", "detectors-angles",
                        "--angles-file", str(tmp_path / "theta.txt"), "--angle-unit", "deg",
                        "--ground-truth", str(tmp_path / "gt.npy")],
            "count": ["--measurement", str(tmp_path / "sino.npy"), "--layout", "detectors-angles",
                      "--angles", "60", "--ground-truth", str(tmp_path / "gt.npy")],
            "ours": ["--measurement", str(tmp_path / "own.npy"), "--ground-truth", str(tmp_path / "gt.npy")]}
    psnr = {}
    for name, argv in runs.items():
        assert main(["reconstruct", "--method", "fbp", *argv, "--out", str(tmp_path / name)]) == 0
        psnr[name] = json.loads((tmp_path / name / "metrics.json").read_text())["psnr"]
    assert abs(psnr["skimage"] - psnr["ours"]) <= 0.5, psnr
    assert psnr["count"] == pytest.approx(psnr["skimage"], abs=1e-6)  # uniform angles, same as the file's
    # orientation and scale: the reconstruction lies on the image (a flip or transpose would not)
    rec, _ = _result(tmp_path / "skimage")
    assert np.corrcoef(rec[0, 0].ravel(), img.ravel())[0, 1] > 0.98
    assert np.corrcoef(rec[0, 0, ::-1].ravel(), img.ravel())[0, 1] < 0.9
    assert rec.mean() == pytest.approx(img.mean(), rel=0.05)


def test_stack_formats_npz_tiff(tmp_path):
    import tifffile

    _, _, sino = _skimage_sinogram(32, 20)
    stack = np.stack([sino.T, 2 * sino.T])  # angles x detectors, two samples
    np.savez(tmp_path / "s.npz", sinograms=stack)
    tifffile.imwrite(tmp_path / "s.tif", stack.astype(np.float32))
    got = {}
    for name in ("s.npz", "s.tif"):
        out = tmp_path / name.replace(".", "_")
        assert main(["reconstruct", "--method", "fbp", "--measurement", str(tmp_path / name),
                     "--no-progress", "--out", str(out)]) == 0
        got[name], _ = _result(out)
        assert got[name].shape == (2, 1, 32, 32)
    np.testing.assert_allclose(got["s.npz"][1], 2 * got["s.npz"][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["s.tif"], got["s.npz"], atol=1e-4)


def _bad_files(tmp_path, data_file):
    _, _, sino = _skimage_sinogram(32, 20)
    np.save(tmp_path / "sino.npy", sino)
    bad = sino.copy()
    bad[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    inf = sino.copy()
    inf[0, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    raw = data_file.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.h5").write_text("not hdf5\n")
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "sino.npy").read_bytes()[:200])


@pytest.mark.parametrize("argv,flag", [
    (["--measurement", "{t}/sino.npy", "--layout", "detectors-angles", "--angles", "30"], "--measurement"),
    (["--measurement", "{t}/sino.npy", "--layout", "detectors-angles", "--detectors", "40"], "--measurement"),
    (["--measurement", "{t}/sino.npy", "--layout", "sideways"], "--layout"),
    (["--measurement", "{t}/nan.npy", "--layout", "detectors-angles"], "--measurement"),
    (["--measurement", "{t}/inf.npy", "--layout", "detectors-angles"], "--measurement"),
    (["--measurement", "{t}/truncated.h5"], "--measurement"),
    (["--measurement", "{t}/text.h5"], "--measurement"),
    (["--measurement", "{t}/truncated.npy"], "--measurement"),
    (["--measurement", "{data}", "--key", "nope"], "--key"),
    (["--measurement", "{data}", "--index", "2"], "--index"),
    (["--measurement", "{data}", "--angles", "20"], "--angles"),
    (["--measurement", "{data}", "--ground-truth", "{t}/sino.npy"], "--ground-truth"),
    (["--measurement", "{t}/sino.npy", "--layout", "detectors-angles", "--method", "tv"], "--alpha"),
    (["--measurement", "{t}/sino.npy", "--angles-file", "{t}/sino.npy"], "--angle-unit"),
    (["--measurement", "{data}", "--image", "camera"], "--image"),
    (["--key", "y"], "--key"),
])
def test_bad_measurement_input(tmp_path, capsys, data_file, argv, flag):
    """One line naming the argument, exit 2, and nothing written under the output folder."""
    _bad_files(tmp_path, data_file)
    argv = [a.format(t=tmp_path, data=data_file) for a in argv]
    out = tmp_path / "out"
    method = [] if "--method" in argv else ["--method", "fbp"]
    capsys.readouterr()
    rc = main(["reconstruct", *method, *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"error: {flag}:" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_lodopab_style_hdf5_with_ground_truth_file(tmp_path):
    """LoDoPaB-CT layout: observation and ground-truth files each hold one dataset ``data``;
    the geometry comes from the flags (here 32x32 images, 20 angles, 46 detectors)."""
    from lifted_inverse.datasets import ellipse_phantom
    from lifted_inverse.operators import Radon

    x = torch.stack([shepp_logan(32), ellipse_phantom(0, 32, 1)]).double()
    y = Radon(32, n_angles=20)(x)[:, 0]  # (N, angles, detectors)
    with h5py.File(tmp_path / "observation_test_000.hdf5", "w") as f:
        f["data"] = y.numpy()
    with h5py.File(tmp_path / "ground_truth_test_000.hdf5", "w") as f:
        f["data"] = x[:, 0].numpy()
    out = tmp_path / "out"
    assert main(["reconstruct", "--method", "fbp", "--measurement", str(tmp_path / "observation_test_000.hdf5"),
                 "--size", "32", "--angles", "20", "--detectors", "46", "--no-progress",
                 "--ground-truth", str(tmp_path / "ground_truth_test_000.hdf5"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["measurement"]["key"] == "data" and m["n_samples"] == 2
    assert min(m["per_sample"]["psnr"]) > 20
    rec, _ = _result(out)
    for b in (0, 1):  # each sample matches its own reference, not the other one
        own, other = (np.corrcoef(rec[b].ravel(), x[c].numpy().ravel())[0, 1] for c in (b, 1 - b))
        assert own > 0.95 and own > other + 0.05
