"""Training loop: digits accuracy floor, exact resume, checkpoints, tasks, backprop baseline."""
import math

import numpy as np
import pytest
import torch

from lifted_inverse.datasets.mnist import write_idx
from lifted_inverse.lifted.checkpoint import load_checkpoint
from lifted_inverse.training import TaskConfig, TrainConfig, make_task, register_task, train
from lifted_inverse.training.tasks import TASKS, Task


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_digits_mlp_lifted_bregman_reaches_95_percent():
    task = make_task("digits-mlp", TaskConfig(seed=0))
    res = train(task, TrainConfig(method="bregman", solver="adam", epochs=12, batch_size=64))
    assert res["test_accuracy"] >= 0.95
    objs = res["train_objective"]
    assert objs[-1] < 0.2 * objs[0]
    # prediction is the plain model: its accuracy equals the reported one
    with torch.no_grad():
        acc = float((task.model(task.x_test).argmax(1) == task.y_test).double().mean())
    assert acc == pytest.approx(res["test_accuracy"])


@pytest.mark.parametrize("method,solver", [("bregman", "bcd"), ("bregman", "nesterov"),
                                           ("fenchel", "heavyball"), ("bregman", "adam"),
                                           ("mac", "bcd"), ("bregman", "isgm"), ("backprop", "adam"),
                                           ("backprop", "sgd"), ("bregman", "bcd/forward-top-down")])
def test_resume_is_exact(tmp_path, method, solver):
    """2k epochs in one go == k epochs, checkpoint, resume for k more (bit for bit)."""
    solver, _, variant = solver.partition("/")
    extra = {"state_init": "forward", "state_order": "top-down"} if variant else {}

    def run(epochs, ckpt=None, resume=None):
        task = make_task("digits-mlp", TaskConfig(seed=3, dtype=torch.float64))
        task.x_train, task.t_train = task.x_train[:200], task.t_train[:200]
        task.y_train = task.y_train[:200]
        cfg = TrainConfig(method=method, solver=solver, epochs=epochs, batch_size=50, seed=3,
                          checkpoint=ckpt, resume=resume, **extra)
        res = train(task, cfg)
        return task.model, res

    straight, res_a = run(4)
    ck = str(tmp_path / "ck.pt")
    run(2, ckpt=ck)
    resumed, res_b = run(4, resume=ck)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert res_a["train_objective"] == res_b["train_objective"]
    payload = torch.load(ck, weights_only=True)
    assert payload["epoch"] == 2 and set(payload) >= {"model", "solver", "states", "rng", "history"}


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(bad)


def test_autoencoder_denoises():
    task = make_task("digits-autoencoder", TaskConfig(seed=0, noise=0.2))
    noisy = float((10 * torch.log10(1 / ((task.x_test - task.y_test) ** 2).mean(1))).mean())
    res = train(task, TrainConfig(method="bregman", solver="adam", epochs=15, batch_size=64, lr=3e-3))
    assert res["test_psnr"] > noisy + 2.0
    assert res["train_objective"][-1] < res["train_objective"][0]


def test_mnist_task_reads_local_idx_files(tmp_path):
    g = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 40)):
        labels = (np.arange(n) % 3).astype(np.uint8)
        images = np.zeros((n, 6, 6), dtype=np.uint8)
        for i, c in enumerate(labels):  # class c lights up row 2c: separable toy digits
            images[i, 2 * c] = 200
        images = np.clip(images + g.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    task = make_task("mnist-mlp", TaskConfig(seed=0, data=str(tmp_path)))
    assert task.x_train.shape == (120, 36)
    res = train(task, TrainConfig(method="bregman", solver="adam", epochs=5, batch_size=30, lr=3e-3))
    assert res["test_accuracy"] > 0.9
    with pytest.raises(ValueError, match="data"):
        make_task("mnist-mlp", TaskConfig())


def test_register_task_and_bad_input():
    @register_task("unit-test-task")
    def _make(config):
        x = torch.randn(20, 4)
        return Task("unit-test-task", torch.nn.Sequential(torch.nn.Linear(4, 2)), x,
                    torch.nn.functional.one_hot(torch.arange(20) % 2, 2).float(), x, torch.arange(20) % 2,
                    output_activation=torch.nn.Softmax(dim=1), input_shape=(4,))
    try:
        task = make_task("unit-test-task")
        res = train(task, TrainConfig(epochs=1, batch_size=10, solver="bcd"))
        assert math.isfinite(res["train_objective"][0])
    finally:
        TASKS.pop("unit-test-task")
    with pytest.raises(ValueError, match="task: unknown"):
        make_task("no-such-task")
    x = torch.randn(5, 4)
    x[1, 1] = float("nan")
    with pytest.raises(ValueError, match="x_train: contains NaN"):
        Task("t", torch.nn.Linear(4, 2), x, torch.zeros(5, 2), x, torch.zeros(5))
    task = make_task("digits-mlp")
    with pytest.raises(ValueError, match="solver: 'isgm' is not available for method 'backprop'"):
        train(task, TrainConfig(method="backprop", solver="isgm"))


def test_unset_fields_take_the_tasks_lifted_settings_then_the_engine_defaults():
    from lifted_inverse.training.loop import ENGINE_DEFAULTS

    task = make_task("digits-mlp", TaskConfig(seed=0))
    preset = task.defaults["lifted"][("bregman", "bcd")]
    ran = TrainConfig(method="bregman", solver="bcd").resolved(task)
    assert all(getattr(ran, k) == v for k, v in preset.items())
    mine = TrainConfig(method="bregman", solver="bcd", lam=0.5, state_order="bottom-up").resolved(task)
    assert (mine.lam, mine.state_order, mine.state_init) == (0.5, "bottom-up", preset["state_init"])
    for other in (TrainConfig(method="bregman", solver="adam"), TrainConfig(method="mac", solver="bcd")):
        got = other.resolved(task)                      # no setting for these: the engine's
        assert all(getattr(got, k) == v for k, v in ENGINE_DEFAULTS.items()) and got.lr is None
    # the result records what ran; 2 epochs of the digits setting already beat 90 %
    res = train(task, TrainConfig(method="bregman", solver="bcd", epochs=2))
    assert {k: res["config"][k] for k in preset} == preset
    assert res["test_accuracy"] > 0.9
    for bad, msg in (({"state_lr": 2.0}, "state_lr: expected a number in"), ({"lam": -1.0}, "lam: must be"),
                     ({"state_init": "zeros"}, "state_init: expected one of")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**bad).validate()
