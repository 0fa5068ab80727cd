"""Every ``train`` flag either takes effect for the chosen task and method (its value is in the
resolved config with source 'user', or in the task description) or exits 2 with one line
naming the flag. Nothing is accepted and ignored.

``--dry-run`` builds the task, resolves the config and builds the update step (where a real run
raises for an option that does not apply) without training.
"""
import json

import pytest

from lifted_inverse.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # dry runs of small nets: threads only contend

#: flag -> (value, config field). Every config-level option of ``train``.
CONFIG_FLAGS = {
    "--epochs": ("3", "epochs"), "--time-budget": ("5", "time_budget"),
    "--batch-size": ("16", "batch_size"), "--lr": ("0.01", "lr"), "--seed": ("4", "seed"),
    "--lr-schedule": ("cosine", "lr_schedule"), "--state-steps": ("2", "state_steps"),
    "--state-init": ("forward", "state_init"), "--state-order": ("top-down", "state_order"),
    "--state-lr": ("1.5", "state_lr"), "--state-sweeps": ("3", "state_sweeps"),
    "--state-tol": ("0.001", "state_tol"), "--lam": ("0.5", "lam"), "--rho": ("2", "rho"),
    "--penalty-growth": ("1.5", "penalty_growth"), "--penalty-max": ("4", "penalty_max"),
    "--tau": ("0.5", "tau"), "--inner-sweeps": ("2", "inner_sweeps"), "--momentum": ("0.5", "momentum"),
    "--power-iterations": ("4", "power_iterations"), "--batched-layers": (None, "batched_layers"),
    "--no-batched-layers": (None, "batched_layers"), "--regularizer": ("l2", "regularizer"),
    "--reg-strength": ("0.001", "reg_strength"), "--select": ("last", "select"),
    "--checkpoint-every": ("2", "checkpoint_every"), "--eval-every": ("2", "eval_every"),
}
#: flag -> (value, description key) for options the task reads
TASK_FLAGS = {"--noise": ("0.05", "noise"), "--data": ("somewhere", None), "--features": ("3", "network"),
              "--layers": ("3", "network"), "--n-train": ("5", "n_train"),
              "--hidden-layers": ("3", "widths"), "--width": ("32", "widths"),
              "--activation": ("tanh", "activation"), "--blocks": ("2", "blocks"),
              "--val-fraction": ("0.2", "data"), "--scanner": ("lidc", "operator"),
              "--geometry": ("fan", "operator")}
LIFTED_ONLY = {"--state-steps", "--state-init", "--state-order", "--state-lr", "--state-sweeps",
               "--state-tol", "--lam", "--rho", "--tau", "--penalty-growth", "--penalty-max",
               "--inner-sweeps", "--momentum", "--power-iterations", "--batched-layers",
               "--no-batched-layers"}

FAMILIES = {  # task family -> (task, extra arguments)
    "classifier": ("digits-mlp", []),
    "autoencoder": ("digits-autoencoder", []),
    "imaging": ("pnn-denoise", ["--n-train", "4", "--layers", "2", "--features", "2"]),
}
METHODS = {"lifted": ["--method", "bregman", "--solver", "adam"],
           "lifted-bcd": ["--method", "bregman", "--solver", "bcd"],
           "lifted-isgm": ["--method", "bregman", "--solver", "isgm"],
           "lifted-heavyball": ["--method", "bregman", "--solver", "heavyball"],
           "backprop": ["--method", "backprop", "--solver", "adam"]}


def expected_error(family: str, method: str, flag: str) -> bool:
    """Where a flag does not apply (the table the test holds the CLI to)."""
    if method == "backprop" and flag in LIFTED_ONLY:
        return True
    if flag == "--penalty-max":      # caps a continuation: alone, refused (with --penalty-growth below)
        return True
    if flag in ("--tau", "--inner-sweeps") and method != "lifted-isgm":
        return True
    if flag == "--momentum" and method != "lifted-heavyball":
        return True
    if flag == "--lr-schedule" and method not in ("lifted", "backprop"):     # Adam / SGD steps only
        return True
    if flag == "--batched-layers" and family != "classifier":      # not a uniform chain
        return True
    if flag == "--data":             # a folder that does not exist, or a task that reads none
        return True
    if family in ("classifier", "autoencoder"):
        if flag in ("--features", "--layers", "--n-train"):
            return True
        if flag == "--noise" and family == "classifier":
            return True
    if flag in ("--hidden-layers", "--width", "--activation") and family != "classifier":
        return True
    if flag == "--blocks":          # digits-resnet only
        return True
    # --val-fraction: the validation split of --data FILE.h5 (tests/test_train_data.py);
    # --scanner, --geometry: unrolled-ct only (tests/test_cli_ct_geometry.py)
    return flag in ("--val-fraction", "--scanner", "--geometry")


@pytest.fixture(autouse=True, scope="module")
def _tasks_built_once():
    """A dry run rebuilds its task; the same task options give the same task, so build each once
    (the imaging tasks cut patches and measure them)."""
    import lifted_inverse.jobs.train as job

    original, built = job.make_task, {}

    def cached(name, config):
        key = (name, repr(config))
        if key not in built:
            built[key] = original(name, config)
        return built[key]
    job.make_task = cached
    yield
    job.make_task = original


def _run(capsys, argv):
    rc = main(["train", "--dry-run", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_flag_applies_or_is_refused(capsys, family, method):
    task, extra = FAMILIES[family]
    if family == "imaging" and method == "lifted-heavyball":
        # the unrolled layers are not affine in their weights: momentum solvers refuse them
        rc, _, err = _run(capsys, ["--task", task, *extra, *METHODS[method]])
        assert rc == 2 and err.count("\n") == 1 and "--solver" in err, err
        return
    base = ["--task", task, *extra, *METHODS[method]]
    rc, out, err = _run(capsys, base)
    assert rc == 0, err
    base_description = json.loads(out)["description"]
    for flag, (value, field) in {**CONFIG_FLAGS, **{k: (v[0], None) for k, v in TASK_FLAGS.items()}}.items():
        argv = base + [flag] + ([] if value is None else [value])
        rc, out, err = _run(capsys, argv)
        if expected_error(family, method, flag):
            assert rc == 2, (flag, out)
            assert err.count("\n") == 1 and flag.replace("--no-", "--") in err, (flag, err)
            continue
        assert rc == 0, (flag, err)
        plan = json.loads(out)
        if flag in CONFIG_FLAGS:
            want = {"--batched-layers": True, "--no-batched-layers": False}.get(flag)
            got = plan["config"][field]
            assert plan["config"]["sources"][field] == "user", flag
            assert got == (want if want is not None else type(got)(value)), (flag, got)
        else:
            key = TASK_FLAGS[flag][1]
            assert key in plan["description"], (flag, plan["description"])
            assert plan["description"][key] != base_description.get(key), (flag, plan["description"])


def test_penalty_max_applies_with_penalty_growth(capsys):
    rc, out, err = _run(capsys, ["--task", "digits-mlp", "--method", "bregman", "--solver", "bcd",
                                 "--penalty-growth", "2", "--penalty-max", "8"])
    assert rc == 0, err
    config = json.loads(out)["config"]
    assert (config["penalty_growth"], config["penalty_max"]) == (2.0, 8.0)
    assert config["sources"]["penalty_max"] == "user"


def test_dry_run_reports_the_default_sources(capsys):
    rc, out, _ = _run(capsys, ["--task", "digits-mlp", "--method", "bregman", "--solver", "bcd"])
    assert rc == 0
    sources = json.loads(out)["config"]["sources"]
    assert sources["lam"] == "task" and sources["rho"] == "engine" and sources["method"] == "user"


# --------------------------------------------------------------------------------------------
# reconstruct, invert, data: every flag against every family, by --dry-run (the checks a run
# makes before computing, then the config record metrics.json / the file's attributes hold)
# --------------------------------------------------------------------------------------------
#: flags cli/__init__.py adds to every command (tests/test_honest_io.py checks them)
SHARED_FLAGS = {"--threads", "--progress", "--no-progress"}


def _options_of(command: str) -> set:
    """The command's flags, less :data:`SHARED_FLAGS` that its own table does not list."""
    from lifted_inverse.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    table = {"reconstruct": RECONSTRUCT_FLAGS, "invert": INVERT_FLAGS, "data": DATA_FLAGS}[command]
    return {o for a in sub._actions for o in a.option_strings if o.startswith("--")} \
        - (SHARED_FLAGS - set(table))


def _dry(capsys, command, argv):
    rc = main([command, "--dry-run", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _check_flag(capsys, command, base, flag, value, field, want, refused):
    """One flag on top of ``base``: refused (exit 2, one line naming it) or in the config with
    source 'user' and value ``want``."""
    rc, out, err = _dry(capsys, command, base + [flag] + ([] if value is None else [value]))
    if refused:
        assert rc == 2 and err.count("\n") == 1 and f"{flag}:" in err, (command, base, flag, err)
        return
    assert rc == 0, (command, base, flag, err)
    config = json.loads(out)
    assert config["sources"][field] == "user", (base, flag)
    assert config[field] == want, (base, flag, config[field])


#: flag -> (value, config field, value recorded)
RECONSTRUCT_FLAGS = {
    "--image": ("ellipses", "image", "ellipses"), "--size": ("20", "size", 20),
    "--normalize": ("minmax", "normalize", "minmax"),
    "--noise": ("0.05", "noise", 0.05), "--noise-type": ("absolute", "noise_type", "absolute"),
    "--alpha": ("0.1", "alpha", 0.1), "--iterations": ("5", "iterations", 5), "--tol": ("1e-4", "tol", 1e-4),
    "--seed": ("3", "seed", 3), "--angles": ("10", "angles", 10), "--filter": ("hann", "filter", "hann"),
    "--checkpoint": (None, "checkpoint", None), "--device": ("cpu", "device", "cpu"),
    "--no-progress": (None, "progress", False),
    # options of --measurement (tests/test_reconstruct_measurement.py): refused for a simulated image
    "--key": ("y", "key", "y"), "--index": ("0", "index", 0), "--layout": ("angles-detectors", "layout", None),
    "--angles-file": ("a.txt", "angles_file", None), "--angle-unit": ("deg", "angle_unit", None),
    "--detectors": ("10", "detectors", None), "--ground-truth": ("gt.npy", "ground_truth", None),
    "--batch-size": ("2", "batch_size", None),
    # CT geometry and transmission noise (tests/test_cli_ct_geometry.py): --dose needs --scanner,
    # --attenuation and --weighting need --photons or --dose, so these three are refused alone
    "--geometry": ("fan", "geometry", "fan"), "--scanner": ("lidc", "scanner", "lidc"),
    "--photons": ("1000", "photons", 1000.0), "--dose": ("low", "dose", None),
    "--attenuation": ("0.05", "attenuation", None), "--weighting": ("none", "weighting", None),
}
RECONSTRUCT_MEASUREMENT_ONLY = {"--key", "--index", "--layout", "--angles-file", "--angle-unit", "--detectors",
                                "--ground-truth", "--batch-size"}
RECONSTRUCT_OPERATORS = ("denoise", "blur", "ct")
RECONSTRUCT_METHODS = ("fbp", "tikhonov", "tv", "unrolled")


def reconstruct_refuses(operator: str, method: str, flag: str) -> bool:
    """Where a reconstruct flag does not apply (the table the test holds the CLI to)."""
    return ((flag == "--angles" and operator != "ct") or (flag == "--filter" and method != "fbp")
            or flag in RECONSTRUCT_MEASUREMENT_ONLY
            or (flag in ("--geometry", "--scanner", "--photons") and operator != "ct")
            or (flag in ("--geometry", "--scanner") and method == "unrolled")
            or flag in ("--dose", "--attenuation", "--weighting")
            or (flag == "--checkpoint" and method != "unrolled")
            or (flag in ("--alpha", "--iterations", "--tol", "--no-progress")
                and method not in ("tikhonov", "tv")))


@pytest.fixture(scope="module")
def pnn_checkpoints(tmp_path_factory):
    """A tiny PNN checkpoint per operator it was 'trained' for (the dry run reads, never runs it)."""
    import torch

    from lifted_inverse.networks import save_checkpoint
    from lifted_inverse.networks.pnn import PNN

    root = tmp_path_factory.mktemp("ck")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {op: str(save_checkpoint(root / f"{op}.pt", PNN(features=2, layers=1), task="pnn-denoise",
                                        operator={"name": op}))
                for op in RECONSTRUCT_OPERATORS}
    finally:
        torch.set_num_threads(threads)


def test_reconstruct_flag_table_covers_every_flag():
    assert _options_of("reconstruct") - {"--help", "--out", "--dry-run", "--operator", "--method", "--measurement"} \
        == set(RECONSTRUCT_FLAGS)


@pytest.mark.parametrize("operator", RECONSTRUCT_OPERATORS)
@pytest.mark.parametrize("method", RECONSTRUCT_METHODS)
def test_reconstruct_every_flag_applies_or_is_refused(capsys, pnn_checkpoints, operator, method):
    base = ["--operator", operator, "--method", method, "--size", "16"]
    if method == "fbp" and operator != "ct":
        rc, _, err = _dry(capsys, "reconstruct", base)
        assert rc == 2 and "--method:" in err and err.count("\n") == 1
        return
    checkpoint = pnn_checkpoints[operator]
    if method == "unrolled":
        base += ["--checkpoint", checkpoint]
    for flag, (value, field, want) in RECONSTRUCT_FLAGS.items():
        if flag == "--checkpoint":
            value = want = checkpoint
        _check_flag(capsys, "reconstruct", base, flag, value, field, want,
                    reconstruct_refuses(operator, method, flag))


@pytest.mark.parametrize("argv,flag", [
    (["--size", "0"], "--size"), (["--iterations", "0"], "--iterations"), (["--angles", "0"], "--angles"),
    (["--tol", "0"], "--tol"), (["--alpha", "-1"], "--alpha"), (["--noise", "nan"], "--noise"),
    (["--method", "unrolled"], "--checkpoint"),
])
def test_reconstruct_explicit_out_of_range_values_are_errors(capsys, argv, flag):
    rc, _, err = _dry(capsys, "reconstruct", argv)
    assert rc == 2 and f"{flag}:" in err and err.count("\n") == 1


def test_reconstruct_checkpoint_of_another_operator_is_refused(capsys, pnn_checkpoints):
    rc, _, err = _dry(capsys, "reconstruct", ["--operator", "blur", "--method", "unrolled",
                                              "--checkpoint", pnn_checkpoints["denoise"]])
    assert rc == 2 and "--operator: the checkpoint was trained for 'denoise'" in err


#: flag -> (value, config field, value recorded); --size per model in INVERT_MODELS
INVERT_FLAGS = {
    "--noise": ("0.1", "noise", 0.1), "--alpha": ("0.5", "alpha", 0.5),
    "--regularizer": ("l1", "regularizer", "l1"), "--image": ("shepp_logan", "image", "shepp_logan"),
    "--size": (None, "size", None), "--outputs": ("32", "outputs", 32), "--iterations": ("5", "iterations", 5),
    "--seed": ("2", "seed", 2), "--device": ("cpu", "device", "cpu"),
    "--cache-dir": ("somewhere", "cache_dir", "somewhere"), "--progress": (None, "progress", True),
}
INVERT_MODELS = {"perceptron": 8, "encoder": 16, "resnet": 16, "checkpoint": 12}  # a size each takes


@pytest.fixture(scope="module")
def sequential_checkpoint(tmp_path_factory):
    import torch
    from torch import nn

    from lifted_inverse.networks import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inv") / "net.pt"
    save_checkpoint(path, nn.Sequential(nn.Flatten(), nn.Linear(144, 20), nn.ReLU()), input_shape=(1, 12, 12))
    return str(path)


def test_invert_flag_table_covers_every_flag():
    # --weights and --target name files that fit one model: tests/test_cli_invert.py covers them
    assert _options_of("invert") - {"--help", "--out", "--dry-run", "--model", "--weights",
                                    "--target"} == set(INVERT_FLAGS)


@pytest.mark.parametrize("model", sorted(INVERT_MODELS))
def test_invert_every_flag_applies_or_is_refused(capsys, sequential_checkpoint, model):
    base = ["--model", sequential_checkpoint if model == "checkpoint" else model]
    for flag, (value, field, want) in INVERT_FLAGS.items():
        if flag == "--size":
            value, want = str(INVERT_MODELS[model]), INVERT_MODELS[model]
        refused = ((flag == "--outputs" and model != "perceptron")
                   or (flag == "--cache-dir" and model not in ("encoder", "resnet")))
        _check_flag(capsys, "invert", base, flag, value, field, want, refused)
    rc, out, _ = _dry(capsys, "invert", base + ["--alpha", "discrepancy"])
    assert rc == 0 and json.loads(out)["alpha"] == "discrepancy"


@pytest.mark.parametrize("argv,flag", [
    (["--model", "perceptron", "--size", "0"], "--size"),
    (["--model", "perceptron", "--iterations", "0"], "--iterations"),
    (["--model", "perceptron", "--outputs", "0"], "--outputs"),
    (["--model", "perceptron", "--alpha", "-1"], "--alpha"),
    (["--model", "perceptron", "--alpha", "abc"], "--alpha"),
    (["--model", "perceptron", "--noise", "-0.1"], "--noise"),
    (["--model", "encoder", "--size", "8"], "--size"),
])
def test_invert_explicit_out_of_range_values_are_errors(capsys, argv, flag):
    rc, _, err = _dry(capsys, "invert", argv)
    assert rc == 2 and f"{flag}:" in err and err.count("\n") == 1


def test_invert_checkpoint_size_must_match(capsys, sequential_checkpoint):
    rc, _, err = _dry(capsys, "invert", ["--model", sequential_checkpoint, "--size", "8"])
    assert rc == 2 and "--size: the model expects 12x12" in err
    rc, out, _ = _dry(capsys, "invert", ["--model", sequential_checkpoint])
    config = json.loads(out)
    assert rc == 0 and config["size"] == 12 and config["iterations"] == 2000 and config["sources"]["size"] == "default"


#: flag -> (value, config field, value recorded)
DATA_FLAGS = {
    "--noise": ("0.05", "noise", 0.05), "--noise-type": ("relative", "noise_type", "relative"),
    "--n": ("3", "n", 3), "--size": ("12", "size", 12), "--image-size": ("32", "image_size", 32),
    "--images": ("camera,coins", "images", "camera,coins"), "--folder": (None, "folder", None),
    "--angles": ("10", "angles", 10), "--seed": ("1", "seed", 1), "--batch-size": ("4", "batch_size", 4),
    "--device": ("cpu", "device", "cpu"), "--layout": ("deepinv", "layout", "deepinv"),
    "--test-fraction": ("0.5", "test_fraction", 0.5),
    # CT geometry and transmission noise (tests/test_cli_ct_geometry.py); --dose needs --scanner,
    # --attenuation needs --photons or --dose
    "--geometry": ("fan", "geometry", "fan"), "--scanner": ("lidc", "scanner", "lidc"),
    "--photons": ("1000", "photons", 1000.0), "--dose": ("low", "dose", None),
    "--attenuation": ("0.05", "attenuation", None),
}
DATA_DATASETS = ("ellipses", "shepp-logan", "builtin", "folder", "patches")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    import numpy as np
    from skimage.io import imsave

    root = tmp_path_factory.mktemp("images")
    for k in range(4):
        imsave(root / f"{k}.png", np.linspace(0, 255, 400).reshape(20, 20).astype(np.uint8)[:, ::1 - 2 * (k % 2)])
    return str(root)


def test_data_flag_table_covers_every_flag():
    assert _options_of("data") - {"--help", "--out", "--dry-run", "--dataset", "--operator"} == set(DATA_FLAGS)


@pytest.mark.parametrize("dataset", DATA_DATASETS)
@pytest.mark.parametrize("operator", ("ct", "denoise"))
def test_data_every_flag_applies_or_is_refused(capsys, image_folder, dataset, operator):
    base = ["--dataset", dataset, "--operator", operator, "--n", "2", "--size", "16"]
    if dataset == "folder":
        base += ["--folder", image_folder]
    if dataset in ("builtin", "patches"):
        base += ["--images", "camera,brick,coins"]
    for flag, (value, field, want) in DATA_FLAGS.items():
        if flag == "--folder":
            value = want = image_folder
        refused = ((flag == "--angles" and operator != "ct") or (flag == "--folder" and dataset != "folder")
                   or (flag == "--images" and dataset not in ("builtin", "patches"))
                   or (flag == "--image-size" and dataset != "patches")
                   or flag == "--test-fraction"      # the deepinv layout's only
                   or (flag in ("--geometry", "--scanner", "--photons") and operator != "ct")
                   or flag in ("--dose", "--attenuation"))
        _check_flag(capsys, "data", base, flag, value, field, want, refused)


@pytest.mark.parametrize("argv,flag", [
    (["--n", "0"], "--n"), (["--size", "4"], "--size"), (["--batch-size", "0"], "--batch-size"),
    (["--angles", "0"], "--angles"), (["--noise", "-1"], "--noise"), (["--dataset", "folder"], "--folder"),
    (["--dataset", "builtin", "--images", "camera", "--n", "2"], "--n"),
    (["--dataset", "patches", "--size", "32", "--image-size", "16"], "--image-size"),
])
def test_data_explicit_out_of_range_values_are_errors(capsys, argv, flag):
    rc, _, err = _dry(capsys, "data", argv)
    assert rc == 2 and f"{flag}:" in err and err.count("\n") == 1
