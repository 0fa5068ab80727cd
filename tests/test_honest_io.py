"""The tools keep the user's data and time: image values as stored, ``--out`` and inputs checked
before any work, files with the umask's mode and strict JSON, no stale temporaries, shared
``--threads`` / ``--progress`` flags, one-line exits (2, 130, 143), plain-text help, ``--version``,
and the package's entry points."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lifted_inverse import io
from lifted_inverse.cli import build_parser, main, plain_text
from lifted_inverse.jobs._common import data_range, load_named_image

pytestmark = pytest.mark.usefixtures("one_thread")
COMMANDS = ("reconstruct", "data", "train", "invert")


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- image values
@pytest.fixture
def hu_slice(tmp_path):
    """An int16 CT slice in Hounsfield units, 40 x 56 (not square), as a TIFF."""
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, size=(40, 56)).astype(np.int16)
    path = tmp_path / "slice.tif"
    imsave(path, image, check_contrast=False)
    return path, image


def test_an_int16_image_keeps_its_values_and_shape(hu_slice):
    path, image = hu_slice
    x = load_named_image(str(path), normalize="none")
    assert x.shape == (1, 40, 56)
    assert torch.equal(x[0], torch.from_numpy(image.astype(np.float32)))
    assert data_range(x) == float(image.max()) - float(image.min())


def test_normalisations_are_explicit(hu_slice, tmp_path):
    path, image = hu_slice
    dtype = load_named_image(str(path), normalize="dtype")[0].double()
    assert torch.allclose(dtype, (torch.from_numpy(image).double() + 32768) / 65535, atol=1e-6)
    minmax = load_named_image(str(path), normalize="minmax")
    assert float(minmax.min()) == 0.0 and float(minmax.max()) == 1.0 and data_range(minmax) == 1.0
    with pytest.raises(ValueError, match="^normalize:"):
        load_named_image(str(path), normalize="clip")


def test_a_float_image_is_not_clipped_and_nan_names_the_image(tmp_path):
    from skimage.io import imsave

    values = np.linspace(-500, 500, 24 * 30, dtype=np.float32).reshape(24, 30)
    imsave(tmp_path / "f.tif", values, check_contrast=False)
    x = load_named_image(str(tmp_path / "f.tif"), normalize="none")
    assert torch.allclose(x[0], torch.from_numpy(values))
    values[3, 4] = np.nan
    imsave(tmp_path / "nan.tif", values, check_contrast=False)
    with pytest.raises(ValueError, match=r"^image: .*nan\.tif.*NaN"):
        load_named_image(str(tmp_path / "nan.tif"))


def test_size_resizes_only_when_given(hu_slice):
    path, _ = hu_slice
    assert load_named_image(str(path), normalize="none").shape == (1, 40, 56)
    assert load_named_image(str(path), 16, normalize="none").shape == (1, 16, 16)
    assert load_named_image("camera").shape == (1, 512, 512)
    assert load_named_image("shepp_logan").shape == (1, 128, 128)


def test_an_int16_hu_image_round_trips_through_reconstruct_denoise(capsys, hu_slice, tmp_path):
    import h5py

    path, image = hu_slice
    out = tmp_path / "run"
    rc, _, err = _run(capsys, ["reconstruct", "--operator", "denoise", "--method", "tv", "--image", str(path),
                               "--noise", "20", "--normalize", "none", "--out", str(out)])
    assert rc == 0, err
    with h5py.File(out / "result.h5", "r") as f:
        truth, rec = f["ground_truth"][()], f["reconstruction"][()]
    assert truth.shape == (1, 40, 56) and np.array_equal(truth[0], image.astype(truth.dtype))
    assert rec.min() < -900 and rec.max() > 900  # HU kept: no [0, 1] clipping, no x >= 0 constraint
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["normalize"] == "none"
    # PSNR / SSIM on the image's own range (HU span), never on a [0, 1] range it does not have
    assert "psnr" not in metrics and metrics["psnr_gt_range"] > 20 and 0 < metrics["ssim_gt_range"] <= 1


# ---------------------------------------------------------------- --out and inputs, before any work
@pytest.fixture
def no_work(monkeypatch):
    """Every job's entry point fails the test if it is reached."""
    from lifted_inverse.jobs import data, invert, reconstruct, train

    def fail(*args, **kwargs):
        raise AssertionError("the job ran before --out was checked")

    for module, name in ((reconstruct, "run_reconstruction"), (data, "make_data"), (invert, "run_inversion"),
                         (train, "run_training")):
        monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("command,extra", [("reconstruct", []), ("invert", ["--model", "perceptron"]),
                                           ("train", [])])
def test_out_on_an_existing_file_fails_fast_before_any_work(capsys, no_work, tmp_path, command, extra):
    taken = tmp_path / "taken"
    taken.write_text("a result the user keeps")
    start = time.perf_counter()
    rc, _, err = _run(capsys, [command, *extra, "--out", str(taken)])
    assert time.perf_counter() - start < 1.0
    assert rc == 2 and err.count("\n") == 1 and "--out:" in err and "not a folder" in err
    assert taken.read_text() == "a result the user keeps"


def test_out_of_data_is_a_file_and_unwritable_folders_are_refused(capsys, no_work, tmp_path):
    rc, _, err = _run(capsys, ["data", "--out", str(tmp_path)])
    assert rc == 2 and "--out:" in err and "is a folder" in err
    rc, _, err = _run(capsys, ["reconstruct", "--out", "/proc/lifted-inverse-test/run"])
    assert rc == 2 and "--out: cannot write into /proc" in err
    (tmp_path / "file").write_text("")
    rc, _, err = _run(capsys, ["reconstruct", "--out", str(tmp_path / "file" / "run")])
    assert rc == 2 and "--out:" in err and "is a file" in err


@pytest.mark.parametrize("argv,flag", [
    (["reconstruct", "--method", "unrolled", "--checkpoint", "missing.pt"], "--checkpoint"),
    (["reconstruct", "--image", "missing.png"], "--image"),
    (["invert", "--model", "missing/net.pt"], "--model"),
    (["train", "--resume", "missing.pt"], "--resume"),
    (["data", "--dataset", "folder", "--folder", "missing"], "--folder"),
])
def test_a_missing_input_is_named_before_any_work(capsys, no_work, tmp_path, argv, flag):
    rc, _, err = _run(capsys, [*argv, "--out", str(tmp_path / "o")])
    assert rc == 2 and err.count("\n") == 1 and f"{flag}: no such" in err, err


# ---------------------------------------------------------------- zero is no default
@pytest.mark.parametrize("argv,flag", [(["--time-budget", "0"], "--time-budget"),
                                       (["--time-budget", "-5"], "--time-budget"),
                                       (["--task", "pnn-denoise", "--layers", "0"], "--layers")])
def test_zero_where_it_has_no_meaning_exits_2(capsys, argv, flag):
    rc, _, err = _run(capsys, ["train", "--dry-run", *argv])
    assert rc == 2 and f"{flag}:" in err and err.count("\n") == 1


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        io.atomic_write_text(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    host = io._host()
    stale = tmp_path / f".result.h5.{_dead_pid()}-{host}.0123abcd.tmp"
    live = tmp_path / f".result.h5.{os.getpid()}-{host}.4567abcd.tmp"
    elsewhere = tmp_path / f".result.h5.{_dead_pid()}-another-host.89abcdef.tmp"
    for p in (stale, live, elsewhere):
        p.write_bytes(b"partial")
    io.atomic_write_text(tmp_path / "result.h5", "x")
    assert not stale.exists() and live.exists() and elsewhere.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, "result.h5"])


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_temporaries_are_removed_on_every_exit_path(tmp_path, error):
    with pytest.raises(error), io.atomic_path(tmp_path / "ckpt.pt") as tmp:
        tmp.write_bytes(b"half")
        raise error()
    assert list(tmp_path.iterdir()) == []


def test_json_is_strict_with_the_reason_of_every_null(tmp_path):
    io.write_json(tmp_path / "m.json", {"psnr": float("inf"), "history": [1.0, float("nan")],
                                        "config": {"a/b": -float("inf")}, "ok": np.float32(0.5)})
    text = (tmp_path / "m.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["psnr"] is None and data["history"] == [1.0, None] and data["ok"] == 0.5
    assert data["non_finite"] == {"/psnr": "inf", "/history/1": "nan", "/config/a~1b": "-inf"}


# ---------------------------------------------------------------- shared flags and exits
def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip().startswith("lifted-inverse 0.")


@pytest.mark.parametrize("command", (None, *COMMANDS))
def test_help_is_plain_text(capsys, command):
    with pytest.raises(SystemExit):
        main(["--help"] if command is None else [command, "--help"])
    text = capsys.readouterr().out
    for markup in ("``", ":func:", ":mod:", ":class:", ":data:", ":meth:"):
        assert markup not in text, (command, markup)


def test_plain_text_removes_roles_and_literals():
    assert plain_text("see :func:`~a.b.run` and :mod:`a.jobs` with ``--out``") == "see run and a.jobs with --out"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_threads_and_progress(capsys, command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    flags = {o for a in sub._actions for o in a.option_strings}
    assert {"--threads", "--progress", "--no-progress"} <= flags
    extra = ["--model", "perceptron"] if command == "invert" else []
    rc, _, err = _run(capsys, [command, *extra, "--threads", "0", "--out", "x"])
    assert rc == 2 and "--threads:" in err and err.count("\n") == 1


def test_default_threads_is_one_and_explicit_threads_apply(capsys, monkeypatch, tmp_path):
    from lifted_inverse import runtime

    seen = []
    monkeypatch.setattr(runtime.torch, "set_num_threads", seen.append)
    main(["train", "--list-tasks"])
    main(["train", "--list-tasks", "--threads", "2"])
    capsys.readouterr()
    assert seen[0] == runtime.DEFAULT_THREADS == 1 and seen[-1] == 2


def test_progress_defaults_to_whether_stderr_is_a_terminal():
    from lifted_inverse.runtime import show_progress

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert show_progress(None, Stream(True)) and not show_progress(None, Stream(False))
    assert show_progress(True, Stream(False)) and not show_progress(False, Stream(True))


def test_ctrl_c_and_sigterm_exit_with_one_line(capsys, monkeypatch, tmp_path):
    import lifted_inverse.jobs.reconstruct as job

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run_reconstruction", interrupted)
    try:
        rc, _, err = _run(capsys, ["reconstruct", "--out", str(tmp_path / "a")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")
    assert rc == 130 and err == "lifted-inverse reconstruct: interrupted\n"

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    class Unhandled(Exception):
        pass

    def guard(signum, frame):  # reached only if main() installs no handler of its own
        raise Unhandled

    monkeypatch.setattr(job, "run_reconstruction", terminated)
    previous = signal.signal(signal.SIGTERM, guard)
    try:
        rc, _, err = _run(capsys, ["reconstruct", "--out", str(tmp_path / "b")])
        assert signal.getsignal(signal.SIGTERM) is guard  # main() restores the handler it found
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 143 and err == "lifted-inverse reconstruct: terminated\n"


# ---------------------------------------------------------------- library
def test_the_package_exports_its_entry_points_lazily():
    code = ("import sys, lifted_inverse as li\n"
            "assert 'torch' not in sys.modules, 'import lifted_inverse loads torch'\n"
            "for name in ('Radon', 'Blur', 'make_operator', 'operator_from_spec', 'tv_pdhg', 'fbp', 'lift',\n"
            "             'train', 'load_checkpoint', 'invert', 'psnr', 'shepp_logan'):\n"
            "    assert callable(getattr(li, name)), name\n"
            "assert set(li.__all__) == set(li._EXPORTS) | {'__version__'} and set(li.__all__) <= set(dir(li))\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_operator_from_spec_rebuilds_the_operator_a_result_file_describes(tmp_path):
    import h5py

    from lifted_inverse import operator_from_spec
    from lifted_inverse.datasets import write_arrays
    from lifted_inverse.datasets.hdf5 import operator_record
    from lifted_inverse.operators import make_operator

    x = torch.rand(2, 1, 12, 16, dtype=torch.float64)
    for name, options in (("ct", {"n_angles": 7}), ("blur", {}), ("inpaint", {"keep": 0.3, "seed": 2}),
                          ("mri", {}), ("denoise", {})):
        op = make_operator(name, (1, 12, 16), **options)
        write_arrays(tmp_path / "result.h5", {"x": x[0]}, {"operator": operator_record(op)})
        with h5py.File(tmp_path / "result.h5", "r") as f:
            record = json.loads(f.attrs["operator"])
        rebuilt = operator_from_spec(record)
        assert torch.allclose(rebuilt(x), op(x)), name
    with pytest.raises(ValueError, match="^image_shape:"):
        operator_from_spec({"name": "ct"})


def test_titles_draw_superscripts():
    from lifted_inverse.plotting import math_title

    assert math_title("noisy output f^δ (ε=0.1)") == "noisy output $f^{δ}$ (ε=0.1)"
    assert math_title("already $f^\\delta$") == "already $f^\\delta$"


def test_a_text_file_given_as_a_checkpoint_is_one_line_naming_the_flag(capsys, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    rc, _, err = _run(capsys, ["train", "--resume", str(text), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and err.count("\n") == 1 and "--resume: cannot read" in err, err
    rc, _, err = _run(capsys, ["invert", "--model", str(text), "--out", str(tmp_path / "o")])
    assert rc == 2 and err.count("\n") == 1 and "--model: cannot read" in err, err


def test_noise_errors_name_the_noise(capsys):
    rc, _, err = _run(capsys, ["invert", "--model", "perceptron", "--noise", "inf", "--dry-run"])
    assert rc == 2 and err.count("\n") == 1 and "--noise:" in err


def test_one_default_ct_angle_count():
    from lifted_inverse import Radon, make_operator
    from lifted_inverse.jobs import data, reconstruct
    from lifted_inverse.operators.geometry import DEFAULT_N_ANGLES

    assert Radon(16).n_angles == make_operator("ct", (1, 16, 16)).n_angles == DEFAULT_N_ANGLES
    assert reconstruct.DEFAULTS["angles"] == data.DEFAULTS["angles"] == DEFAULT_N_ANGLES


def test_a_noise_level_that_overflows_the_measurement_names_the_noise(capsys, tmp_path):
    rc, _, err = _run(capsys, ["reconstruct", "--operator", "denoise", "--size", "16", "--noise", "1e300",
                               "--out", str(tmp_path / "o")])
    assert rc == 2 and err.count("\n") == 1 and "--noise:" in err and "overflows" in err
