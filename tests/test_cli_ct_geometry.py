"""``reconstruct`` / ``data`` on fan-beam CT, scanner presets and low-dose transmission data:
the acceptance figures of the fan geometry (FBP PSNR, TV over FBP), the operator spec in the
outputs, pre-log counts and post-log line integrals, PWLS weighting, and the refusals."""
import json

import h5py
import numpy as np
import pytest

from lifted_inverse.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv, out):
    assert main(["reconstruct", *argv, "--out", str(out)]) == 0
    with open(out / "metrics.json") as f:
        return json.load(f)


def _spec(out):
    with h5py.File(out / "result.h5", "r") as f:
        return json.loads(f.attrs["operator"])["spec"]


def test_fan_fbp_of_the_shepp_logan_phantom_reaches_28_db(tmp_path):
    m = _run(["--operator", "ct", "--geometry", "fan", "--method", "fbp", "--image", "shepp_logan",
              "--noise", "0", "--angles", "360"], tmp_path)
    assert m["psnr"] >= 28.0
    spec = _spec(tmp_path)
    assert spec["geometry"] == "fan" and spec["n_angles"] == 360
    assert m["config"]["geometry"] == "fan"


def test_fan_tv_beats_fan_fbp_by_2_db_at_1_percent_noise(tmp_path):
    common = ["--operator", "ct", "--geometry", "fan", "--noise", "0.01", "--angles", "60", "--size", "64"]
    fbp = _run([*common, "--method", "fbp"], tmp_path / "fbp")
    tv = _run([*common, "--method", "tv", "--iterations", "300", "--no-progress"], tmp_path / "tv")
    assert tv["psnr"] >= fbp["psnr"] + 2.0
    tik = _run([*common, "--method", "tikhonov", "--iterations", "200", "--no-progress"], tmp_path / "tik")
    assert _spec(tmp_path / "tik")["geometry"] == "fan"
    assert tik["psnr"] > 20.0


def test_lidc_scanner_builds_at_a_small_size_and_angles_override_its_count(tmp_path):
    m = _run(["--scanner", "lidc", "--size", "64", "--angles", "90", "--method", "fbp", "--noise", "0"], tmp_path)
    spec = _spec(tmp_path)
    assert spec["geometry"] == "fan" and spec["n_angles"] == 90 and spec["n_detectors"] == 900
    assert spec["source_origin"] == 575.0 and spec["pixel_size"] == pytest.approx(300 / 64)
    assert m["config"]["scanner"] == "lidc" and m["config"]["angles"] == 90
    assert m["psnr"] > 25.0


def test_a_fan_beam_sinogram_file_is_reconstructed_in_the_geometry_given(tmp_path):
    sim = _run(["--geometry", "fan", "--method", "fbp", "--size", "64", "--noise", "0", "--angles", "90"],
               tmp_path / "sim")
    with h5py.File(tmp_path / "sim" / "result.h5", "r") as f:
        np.save(tmp_path / "y.npy", f["measurement"][()])
        np.save(tmp_path / "x.npy", f["ground_truth"][()])
    read = _run(["--measurement", str(tmp_path / "y.npy"), "--ground-truth", str(tmp_path / "x.npy"),
                 "--geometry", "fan", "--size", "64", "--method", "fbp"], tmp_path / "read")
    assert _spec(tmp_path / "read") == _spec(tmp_path / "sim")
    assert read["psnr"] == pytest.approx(sim["psnr"], abs=1e-4)


def test_lidc_scanner_angle_count_defaults_to_the_preset(capsys):
    assert main(["reconstruct", "--dry-run", "--scanner", "lidc", "--method", "fbp"]) == 0
    assert json.loads(capsys.readouterr().out)["angles"] == 360


def test_photons_store_counts_and_post_log_data_and_pwls_tv_beats_fbp(tmp_path):
    common = ["--size", "64", "--photons", "1000", "--attenuation", "0.1", "--seed", "1"]
    fbp = _run([*common, "--method", "fbp"], tmp_path / "fbp")
    tv = _run([*common, "--method", "tv", "--iterations", "300", "--no-progress"], tmp_path / "tv")
    with h5py.File(tmp_path / "tv" / "result.h5", "r") as f:
        counts, y = f["counts"][()], f["measurement"][()]
        noise = json.loads(f.attrs["noise"])
    assert counts.shape == y.shape and np.all(counts == np.round(counts)) and counts.min() > 0
    np.testing.assert_allclose(y, -np.log(counts / 1000.0) / 0.1, rtol=1e-5, atol=1e-5)
    assert noise["model"] == "transmission" and noise["photons"] == 1000.0 and noise["attenuation"] == 0.1
    assert tv["weighting"] == "pwls" and tv["photons"] == 1000.0
    # the default alpha's noise level: 1 / sqrt(mean(mu^2 n)) with normalised PWLS weights
    assert tv["noise_std"] == pytest.approx(1.0 / np.sqrt(np.mean(0.01 * counts)), rel=1e-6)
    assert tv["psnr"] >= fbp["psnr"] + 3.0


def test_pwls_weighting_beats_the_unweighted_data_term_at_the_same_alpha(tmp_path):
    # optical depths up to ~2 (mu = 0.1 per pixel at 64²): counts vary ~10x across the rays
    common = ["--size", "64", "--method", "tv", "--photons", "300", "--attenuation", "0.1", "--seed", "1",
              "--alpha", "2", "--iterations", "300", "--no-progress"]
    pwls = _run([*common, "--weighting", "pwls"], tmp_path / "pwls")
    plain = _run([*common, "--weighting", "none"], tmp_path / "none")
    assert pwls["psnr"] >= plain["psnr"] + 0.5 and pwls["ssim"] >= plain["ssim"] + 0.05


def test_dose_level_of_the_lidc_scanner_sets_the_photon_count(capsys):
    assert main(["reconstruct", "--dry-run", "--scanner", "lidc", "--dose", "low", "--method", "tv"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["photons"] == 3500.0 and config["weighting"] == "pwls" and config["attenuation"] == 0.02


@pytest.mark.parametrize("argv,flag", [
    (["--operator", "denoise", "--geometry", "fan"], "--geometry"),
    (["--operator", "blur", "--photons", "1000"], "--photons"),
    (["--photons", "1000", "--noise", "0.01"], "--noise"),
    (["--scanner", "lidc", "--geometry", "fan"], "--scanner"),
    (["--dose", "low"], "--dose"),
    (["--scanner", "parallel", "--dose", "low"], "--dose"),
    (["--scanner", "lidc", "--dose", "low", "--photons", "10"], "--dose"),
    (["--attenuation", "0.1"], "--attenuation"),
    (["--photons", "0"], "--photons"),
    (["--photons", "100", "--attenuation", "-1"], "--attenuation"),
    (["--photons", "100", "--method", "fbp", "--weighting", "none"], "--weighting"),
    (["--measurement", "m.npy", "--photons", "100"], "--photons"),
    (["--measurement", "m.npy", "--geometry", "fan"], "--size"),
    (["--measurement", "m.npy", "--scanner", "lidc", "--size", "32"], "--measurement"),
])
def test_options_that_do_not_apply_exit_2_naming_the_flag(capsys, tmp_path, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    np.save("m.npy", np.zeros((10, 16)))
    assert main(["reconstruct", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert f"{flag}:" in err and err.count("\n") == 1, err


def test_data_file_of_a_scanner_with_transmission_noise_and_its_pwls_reconstruction(tmp_path):
    path = tmp_path / "d.h5"
    assert main(["data", "--operator", "ct", "--scanner", "lidc", "--size", "32", "--angles", "45", "--n", "2",
                 "--dose", "extremely_low", "--out", str(path)]) == 0
    with h5py.File(path, "r") as f:
        counts, y = f["counts"][()], f["y"][()]
        noise, spec = json.loads(f.attrs["noise"]), json.loads(f.attrs["operator"])["spec"]
    assert counts.shape == y.shape == (2, 1, 45, 900)
    assert noise["model"] == "transmission" and noise["photons"] == 1000.0 and noise["attenuation"] == 0.02
    assert spec["geometry"] == "fan" and spec["source_origin"] == 575.0
    np.testing.assert_allclose(y, -np.log(np.maximum(counts, 1) / 1000.0) / 0.02, rtol=1e-5, atol=1e-4)
    # reconstruct --measurement weights TV by the file's counts, with the noise level they give
    m = _run(["--measurement", str(path), "--ground-truth", str(path), "--method", "tv", "--iterations", "50",
              "--no-progress"], tmp_path / "rec")
    assert m["weighting"] == "pwls" and m["config"]["weighting"] == "pwls"
    expected = 1.0 / np.sqrt((0.02 ** 2 * counts.reshape(2, -1)).mean(1))
    np.testing.assert_allclose(m["noise_std"], expected, rtol=1e-6)
    with h5py.File(tmp_path / "rec" / "result.h5", "r") as f:
        np.testing.assert_array_equal(f["counts"][()], counts)
    unweighted = _run(["--measurement", str(path), "--method", "tv", "--weighting", "none", "--alpha", "1",
                       "--iterations", "5", "--no-progress"], tmp_path / "rec2")
    assert unweighted["weighting"] == "none"


@pytest.mark.parametrize("argv,flag", [
    (["--operator", "blur", "--photons", "1000"], "--photons"),
    (["--operator", "ct", "--photons", "1000", "--noise", "0.01"], "--noise"),
    (["--operator", "denoise", "--scanner", "lidc"], "--scanner"),
    (["--operator", "ct", "--geometry", "fan", "--scanner", "lidc"], "--scanner"),
    (["--operator", "ct", "--dose", "full"], "--dose"),
])
def test_data_refuses_ct_options_that_do_not_apply(capsys, argv, flag):
    assert main(["data", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert f"{flag}:" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv,want", [
    (["--geometry", "fan"], {"name": "ct", "n_angles": 60, "geometry": "fan"}),
    # the preset's resolved spec (lidc measures 360 x 900 rays: too slow for a unit test)
    (["--scanner", "parallel"], {"name": "ct", "n_angles": 60, "n_detectors": 182, "model": "joseph"}),
])
def test_train_unrolled_ct_records_the_geometry_in_its_task(capsys, argv, want):
    rc = main(["train", "--dry-run", "--task", "unrolled-ct", "--n-train", "2", "--layers", "1", "--features", "2",
               *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    operator = json.loads(out)["description"]["operator"]
    assert {k: operator[k] for k in want} == want


def test_train_unrolled_ct_on_a_fan_beam_checkpoint_reconstructs_with_its_geometry(tmp_path):
    assert main(["train", "--task", "unrolled-ct", "--geometry", "fan", "--n-train", "2",
                 "--layers", "1", "--features", "2", "--epochs", "1", "--method", "backprop",
                 "--out", str(tmp_path / "run")]) == 0
    m = _run(["--operator", "ct", "--method", "unrolled", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
              "--size", "64", "--angles", "30"], tmp_path / "rec")
    spec = _spec(tmp_path / "rec")
    assert spec["geometry"] == "fan" and spec["n_angles"] == 30 and np.isfinite(m["psnr"])


@pytest.mark.parametrize("argv,flag", [
    (["--task", "pnn-denoise", "--scanner", "lidc"], "--scanner"),
    (["--task", "unrolled-ct", "--scanner", "lidc", "--geometry", "fan"], "--scanner"),
    (["--task", "unrolled-ct", "--geometry", "cone"], "--geometry"),
])
def test_train_refuses_ct_geometry_options_that_do_not_apply(capsys, argv, flag):
    assert main(["train", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert f"{flag}:" in err and err.count("\n") == 1, err


def test_metrics_json_alone_rebuilds_the_operator(tmp_path):
    """metrics.json carries the operator's full record (fan geometry included), so
    ``operator_from_spec`` rebuilds the operator a run used without its result.h5."""
    import json

    import torch

    from lifted_inverse.cli import main
    from lifted_inverse.operators.registry import operator_from_spec

    out = tmp_path / "fan"
    assert main(["reconstruct", "--operator", "ct", "--geometry", "fan", "--method", "fbp", "--size", "32",
                 "--angles", "20", "--noise", "0", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())["operator_record"]
    assert record["spec"]["geometry"] == "fan"
    op = operator_from_spec(record)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    import h5py

    from lifted_inverse.datasets.hdf5 import operator_from_record
    with h5py.File(out / "result.h5", "r") as f:
        stored = operator_from_record(json.loads(f.attrs["operator"]))
    assert torch.allclose(op(x), stored(x))
