"""``lifted-inverse data``: a request for more samples than the source holds is an error saying so
(never silently fewer); the deepinv layout's options apply to it only."""
import h5py
import numpy as np
import pytest

from lifted_inverse.cli import main


@pytest.mark.parametrize("source", ["builtin", "folder"])
def test_more_samples_than_images_is_an_error_saying_how_many(tmp_path, capsys, source):
    from skimage.io import imsave

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a", "b"):
        imsave(folder / f"{name}.png", np.arange(256, dtype=np.uint8).reshape(16, 16))
    pick = ["--images", "camera,coins"] if source == "builtin" else ["--folder", str(folder)]
    argv = ["data", "--dataset", source, *pick, "--operator", "denoise", "--size", "16"]
    assert main([*argv, "--n", "10", "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--n:" in err and "2 images" in err and "10" in err
    assert not (tmp_path / "x.h5").exists()
    assert main([*argv, "--n", "2", "--out", str(tmp_path / "x.h5")]) == 0
    with h5py.File(tmp_path / "x.h5") as f:
        assert f["x"].shape[0] == 2


def test_deepinv_options(tmp_path, capsys):
    base = ["data", "--operator", "denoise", "--n", "4", "--size", "16", "--out", str(tmp_path / "d.h5")]
    assert main([*base, "--test-fraction", "0.5"]) == 2
    assert "--test-fraction:" in capsys.readouterr().err
    assert main([*base, "--layout", "deepinv", "--test-fraction", "1"]) == 2
    assert "--test-fraction: expected a fraction in [0, 1)" in capsys.readouterr().err
    assert main([*base, "--layout", "deepinv", "--test-fraction", "0"]) == 0
    with h5py.File(tmp_path / "d.h5") as f:
        assert sorted(f) == ["x_train", "y_train"] and f.attrs["layout"] == "deepinv"
