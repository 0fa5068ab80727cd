"""``lifted-inverse train`` end to end: outputs, resume, readable errors."""
import json

import pytest
import torch

from lifted_inverse.cli import main
from lifted_inverse.networks.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method,solver", [("bregman", "bcd"), ("backprop", "adam")])
def test_train_writes_metrics_plot_checkpoint(tmp_path, method, solver):
    out = tmp_path / "run"
    rc = main(["train", "--task", "digits-mlp", "--method", method, "--solver", solver,
               "--epochs", "2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "train_objective", "seconds", "seconds_per_epoch", "history"):
        assert key in metrics
    assert len(metrics["train_objective"]) == 2 and len(metrics["history"]) == 2
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert (out / "convergence.png").stat().st_size > 1000
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck.epoch == 2 and ck.task == "digits-mlp" and ck.trainer_state is not None
    x = torch.randn(3, 64)
    assert ck.model(x).shape == (3, 10) and ck.input_shape == (64,)
    # resume to 3 epochs
    rc = main(["train", "--task", "digits-mlp", "--method", method, "--solver", solver,
               "--epochs", "3", "--threads", "1", "--out", str(out), "--resume",
               str(out / "checkpoint.pt")])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 3


@pytest.mark.parametrize("argv,message", [
    (["--task", "nope"], "task: unknown"),
    (["--method", "backprop", "--solver", "isgm"], "solver: 'isgm' is not available"),
    (["--threads", "0"], "--threads"),
    (["--task", "mnist-mlp"], "data: mnist-mlp needs --data"),
    (["--epochs", "-1"], "epochs"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, message):
    rc = main(["train", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1


def test_batched_layers_default_and_opt_out_agree(tmp_path):
    """Layer-parallel kernels are the default; ``--no-batched-layers`` runs the per-layer solver
    and trains the same network (same objective sequence up to rounding)."""
    runs = {}
    for flag in ("--batched-layers", "--no-batched-layers"):
        out = tmp_path / flag
        assert main(["train", "--task", "digits-mlp", "--method", "bregman", "--solver", "bcd",
                     "--epochs", "2", "--threads", "1", "--out", str(out), flag]) == 0
        runs[flag] = json.loads((out / "metrics.json").read_text())
    on, off = runs["--batched-layers"], runs["--no-batched-layers"]
    assert on["config"]["batched_layers"] is True and off["config"]["batched_layers"] is False
    assert on["config"]["sources"]["batched_layers"] == "user"
    assert on["train_objective"] == pytest.approx(off["train_objective"], rel=1e-4)
