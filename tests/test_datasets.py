import gzip
import json

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lifted_inverse.datasets import (
    EllipseDataset,
    ImageFolder,
    ImageList,
    MeasurementDataset,
    MnistIdx,
    PatchDataset,
    builtin_image,
    describe,
    list_builtin_images,
    make_measurements,
    random_ellipses,
    read_idx,
    shepp_logan,
    split_images,
    write_idx,
)
from lifted_inverse.datasets.hdf5 import operator_from_record, operator_record
from lifted_inverse.operators import Blur, GaussianNoise, Identity, Radon, gaussian_kernel


def test_phantoms_shapes_range_and_seeding():
    p = shepp_logan(64)
    assert p.shape == (1, 64, 64) and p.dtype == torch.float32
    assert float(p.min()) >= 0 and float(p.max()) == pytest.approx(1.0, abs=0.05)
    a, b, c = random_ellipses(3, 32, seed=5), random_ellipses(3, 32, seed=5), random_ellipses(3, 32, seed=6)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.amax(dim=(1, 2, 3)).min()) == pytest.approx(1.0)
    assert not torch.equal(a[0], a[1])
    ds = EllipseDataset(10, 32, seed=5)
    assert torch.equal(ds[2], a[2])  # item i does not depend on n
    with pytest.raises(ValueError, match="n"):
        random_ellipses(0, 32)


def test_builtin_images():
    names = list_builtin_images()
    assert {"camera", "astronaut", "moon", "coins", "brick", "grass", "gravel", "text"} <= set(names)
    for name in names:
        im = builtin_image(name, 24)
        assert im.shape == (1, 24, 24) and 0 <= float(im.min()) <= float(im.max()) <= 1, name
    rgb = builtin_image("astronaut", (20, 30), gray=False)
    assert rgb.shape == (3, 20, 30)
    full = builtin_image("camera")
    assert full.shape == (1, 512, 512)
    with pytest.raises(ValueError, match="camera"):
        builtin_image("no_such_image")


def test_patches_and_split():
    train, test = split_images(["camera", "brick", "moon", "grass"], ["moon"])
    assert train == ["camera", "brick", "grass"] and test == ["moon"]
    with pytest.raises(ValueError, match="test_names"):
        split_images(["camera"], ["moon"])
    images = [builtin_image(n, 64) for n in train]
    a = PatchDataset(images, 16, 50, seed=3)
    b = PatchDataset(images, 16, 50, seed=3)
    assert len(a) == 50 and a[7].shape == (1, 16, 16)
    assert all(torch.equal(a[i], b[i]) for i in range(50))
    assert not all(torch.equal(a[i], PatchDataset(images, 16, 50, seed=4)[i]) for i in range(50))
    # each patch is a crop of one of the training images
    k, top, left = a.index[7]
    assert torch.equal(a[7], images[k][:, top:top + 16, left:left + 16])
    assert set(a.index[:, 0]) == {0, 1, 2}
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(images, 65, 3)


def test_image_folder(tmp_path):
    from skimage.io import imsave

    cam = (builtin_image("camera", 40)[0].numpy() * 255).astype(np.uint8)
    imsave(tmp_path / "b.png", cam)
    imsave(tmp_path / "a.tif", cam)
    (tmp_path / "notes.txt").write_text("ignore me")
    ds = ImageFolder(tmp_path, size=32)
    assert [p.name for p in ds.files] == ["a.tif", "b.png"]
    assert ds[1].shape == (1, 32, 32)
    full = ImageFolder(tmp_path)[0]
    assert torch.allclose(full[0], torch.from_numpy(cam / 255.0).float(), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        ImageFolder(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no"):
        ImageFolder(tmp_path / "empty")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_and_mnist(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    assert np.array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), images)
    floats = rng.normal(size=(2, 3)).astype(np.float32)
    write_idx(tmp_path / "f.idx", floats)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)
    ds = MnistIdx(tmp_path, train=False)
    assert len(ds) == 5
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and y == int(labels[3])
    assert torch.allclose(x[0], torch.from_numpy(images[3] / 255.0).float())
    with pytest.raises(FileNotFoundError, match="train-images"):
        MnistIdx(tmp_path, train=True)


def test_idx_corrupt_header(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.idx"):
        read_idx(bad)
    wrong_type = tmp_path / "type.idx"
    wrong_type.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="type"):
        read_idx(wrong_type)
    short = tmp_path / "short.idx.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(b"\x00\x00\x08\x02\x00\x00\x00\x03\x00\x00\x00\x03" + b"\x01" * 5)
    with pytest.raises(ValueError, match="short.idx.gz"):
        read_idx(short)


def test_make_measurements_round_trip_and_provenance(tmp_path):
    ds = EllipseDataset(5, 24, seed=1)
    op = Blur((1, 24, 24), gaussian_kernel(5, 1.0), "circular")
    path = make_measurements(ds, op, GaussianNoise(0.05, seed=7), tmp_path / "m.h5", batch_size=2)
    with h5py.File(path) as f:
        assert f["x"].chunks == (1, 1, 24, 24) and f["y"].shape == (5, 1, 24, 24)
    m = MeasurementDataset(path)
    assert len(m) == 5
    x, y = m[3]
    assert torch.equal(x, ds[3])
    clean = op(x[None].double())[0]
    resid = (y.double() - clean)
    assert 0.03 < float(resid.std()) < 0.07  # the noise is there, at the requested level
    a = m.attrs
    assert a["operator_class"] == "Blur" and a["operator"]["class"] == "Blur"
    assert a["operator"]["spec"]["boundary"] == "circular"
    assert a["operator"]["in_shape"] == [1, 24, 24]
    rebuilt = m.operator()  # from the file's spec: the same blur
    assert type(rebuilt) is Blur and torch.equal(rebuilt.kernel, op.kernel)
    assert torch.equal(rebuilt(x[None].double()), clean[None])
    assert a["noise"] == {"model": "gaussian", "sigma": 0.05, "relative": False, "seed": 7}
    assert a["seed"] == 7 and a["n_samples"] == 5 and a["dataset"] == "EllipseDataset"
    assert a["lifted_inverse_version"] and a["created"].startswith("20")
    # same seed -> same file content; DataLoader workers open the file lazily
    path2 = make_measurements(ds, op, GaussianNoise(0.05, seed=7), tmp_path / "m2.h5", batch_size=3)
    assert torch.equal(MeasurementDataset(path2)[4][1], m[4][1])
    batches = list(DataLoader(m, batch_size=2, num_workers=2))
    assert torch.equal(batches[1][1][1], m[3][1])
    assert not list(tmp_path.glob(".*tmp"))


def test_operator_record_without_spec_is_not_rebuilt(tmp_path):
    """A composition has no registry name: the file records it by ``describe`` and says so."""
    op = Radon(16, n_angles=4) @ Blur((1, 16, 16), "box", "zero")
    record = operator_record(op)
    assert record["class"] == "Composition" and "spec" not in record
    path = make_measurements(EllipseDataset(2, 16, seed=0), op, None, tmp_path / "c.h5")
    with pytest.raises(ValueError, match="holds no operator spec"):
        MeasurementDataset(path).operator()
    with pytest.raises(ValueError, match="output shape"):
        operator_from_record({**operator_record(Radon(16, n_angles=4)), "out_shape": [1, 4, 16]})


def test_describe_radon_and_composition():
    r = Radon(16, n_angles=8, n_detectors=20)
    d = describe(r)
    assert d["class"] == "Radon" and d["parameters"]["n_angles"] == 8
    assert d["parameters"]["n_detectors"] == 20 and d["out_shape"] == [1, 8, 20]
    json.dumps(d)
    comp = describe(r @ Identity((1, 16, 16)))
    assert comp["class"] == "Composition" and comp["parameters"]["outer"]["class"] == "Radon"


def test_measurement_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        MeasurementDataset(tmp_path / "nothere.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(ValueError, match="junk.h5"):
        MeasurementDataset(junk)
    with h5py.File(tmp_path / "nox.h5", "w") as f:
        f["y"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="x"):
        MeasurementDataset(tmp_path / "nox.h5")
    # truncated file (a crash mid-copy)
    good = make_measurements(ImageList([shepp_logan(16)] * 2), Identity((1, 16, 16)), None, tmp_path / "g.h5")
    data = good.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="trunc.h5"):
        MeasurementDataset(tmp_path / "trunc.h5")[1]
    with pytest.raises(TypeError, match="operator"):
        make_measurements(ImageList([shepp_logan(16)]), "identity", None, tmp_path / "z.h5")
    with pytest.raises(ValueError, match="shape"):  # dataset images do not fit the operator
        make_measurements(ImageList([shepp_logan(16)]), Identity((1, 8, 8)), None, tmp_path / "z.h5")
    assert not (tmp_path / "z.h5").exists()


def _flip_middle_byte(path, dataset: str, sample: int):
    """Flip one byte in the middle of ``dataset``'s chunk of ``sample`` (a disk error)."""
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(sample)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_detected_and_names_the_dataset(tmp_path):
    """Every array dataset carries Fletcher-32 checksums; a changed byte is an error naming the
    dataset and the sample, never data (the other samples still read)."""
    path = make_measurements(EllipseDataset(6, 16, seed=0), Identity((1, 16, 16)), GaussianNoise(0.1, seed=1),
                             tmp_path / "m.h5")
    with h5py.File(path) as f:
        assert all(f[k].fletcher32 and f[k].chunks == (1, 1, 16, 16) for k in ("x", "y"))
    before = MeasurementDataset(path).read([2, 4])
    _flip_middle_byte(path, "y", 3)
    m = MeasurementDataset(path)
    after = m.read([2, 4])      # the other samples still read, unchanged
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    with pytest.raises(ValueError, match=r"dataset 'y'.*m\.h5.*checksum mismatch") as err:
        m[3]
    assert "sample 3" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"samples \[1, 3, 5\] of dataset 'y'"):
        m.read([5, 3, 1])
    # write_arrays (result files) is checked the same way
    from lifted_inverse.datasets import write_arrays
    out = write_arrays(tmp_path / "r.h5", {"x": np.ones((3, 8, 8), np.float32), "psnr": np.arange(3.0),
                                           "scalar": np.float64(2.0)})
    with h5py.File(out) as f:
        assert f["x"].fletcher32 and f["psnr"].fletcher32 and f["scalar"][()] == 2.0
    _flip_middle_byte(out, "x", 1)
    with h5py.File(out) as f, pytest.raises(OSError):
        f["x"][1]


def test_deepinv_layout_splits_and_batched_reads(tmp_path):
    ds = EllipseDataset(7, 12, seed=2)
    op = Identity((1, 12, 12))
    path = make_measurements(ds, op, GaussianNoise(0.1, seed=4), tmp_path / "d.h5", batch_size=3,
                             layout="deepinv", n_test=2)
    whole = make_measurements(ds, op, GaussianNoise(0.1, seed=4), tmp_path / "w.h5", batch_size=7)
    with h5py.File(path) as f:
        assert sorted(f) == ["x_test", "x_train", "y_test", "y_train"] and f.attrs["layout"] == "deepinv"
    train, test, ref = (MeasurementDataset(path), MeasurementDataset(path, "test"), MeasurementDataset(whole))
    assert train.layout == "deepinv" and train.splits == ("train", "test") and (len(train), len(test)) == (5, 2)
    # the noise stream runs over all items in order, across the batch that straddles the split
    x, y = ref.read(range(7))
    assert torch.equal(train.read(range(5))[1], y[:5]) and torch.equal(test.read([0, 1])[1], y[5:])
    # any order, repeats: the batch comes back in the order asked
    xb, yb = train.read(torch.tensor([4, 0, 4, 2]))
    assert torch.equal(xb, x[[4, 0, 4, 2]]) and torch.equal(yb, y[[4, 0, 4, 2]])
    assert train.operator()(x[:1].double()).shape == (1, 1, 12, 12)
    with pytest.raises(ValueError, match="split.*has no 'test' split|no 'test' split"):
        MeasurementDataset(whole, "test")
    with pytest.raises(ValueError, match="n_test"):
        make_measurements(ds, op, None, tmp_path / "e.h5", n_test=2)        # the data layout has one split
    with pytest.raises(ValueError, match="layout"):
        make_measurements(ds, op, None, tmp_path / "e.h5", layout="npz")
    # clean images only: x reads, y is None when not required
    with h5py.File(tmp_path / "clean.h5", "w") as f:
        f["x"] = x.numpy()
    clean = MeasurementDataset(tmp_path / "clean.h5", require_y=False)
    assert clean.y_key is None and clean.read([1])[1] is None and torch.equal(clean[1][0], x[1])
    with pytest.raises(ValueError, match=r"no dataset\(s\) \['y'\]"):
        MeasurementDataset(tmp_path / "clean.h5")
