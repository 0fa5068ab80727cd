"""benchmarks/bench_signal.py: its cosines and norms on cases with a known answer.

A single affine layer with an identity output has no hidden states, so its lifted W-block
gradient is backprop's gradient of ``½‖Wx + b − t‖²`` (batch mean): a BCD step moves along
``−G`` (cosine 1). Adam's first step is ``−lr·G/(|G| + ε)`` elementwise (bias-corrected moments
``m̂ = G``, ``v̂ = G²``), whose norm and cosine with ``−G`` have closed forms, not 1.
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lifted_inverse.training import TrainConfig
from lifted_inverse.training.tasks import Task

pytestmark = pytest.mark.usefixtures("one_thread")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_signal.py"
_spec = importlib.util.spec_from_file_location("bench_signal", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _linear_task(n=40, d_in=6, d_out=3, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    t = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Linear(d_in, d_out).double()
    return Task("linear", model, x, t, x[:5], t[:5], kind="regression", input_shape=(d_in,))


def test_cosine_known_values():
    a = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert bench.cosine(a, 3 * a) == pytest.approx(1.0)
    assert bench.cosine(a, -a) == pytest.approx(-1.0)
    assert bench.cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0])) == pytest.approx(0.0)
    assert bench.cosine(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(bench.cosine(torch.zeros(3), torch.ones(3)))


def test_single_linear_layer_bcd_moves_along_minus_gradient():
    task = _linear_task()
    w0 = task.model.weight.detach().clone()
    res = bench.signal(task, TrainConfig(method="bregman", solver="bcd", batch_size=0,
                                         batched_layers=False), batches=2)
    (row,) = res["summary"]
    with torch.enable_grad():
        loss = 0.5 * (task.model(task.x_train) - task.t_train).pow(2).sum(1).mean()
        (g,) = torch.autograd.grad(loss, task.model.weight)
    assert row["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)
    assert row["cos_update"] == pytest.approx(1.0, abs=1e-10)
    assert row["cos_update_mean"] == pytest.approx(1.0, abs=1e-10)
    # the lifted W-block gradient is backprop's
    assert row["cos_lifted_grad"] == pytest.approx(1.0, abs=1e-12)
    assert row["lifted_grad_ratio"] == pytest.approx(1.0, rel=1e-10)
    assert row["update_norm"] > 0 and row["moved"] == row["steps"] == 2
    assert row["relative_update"] == pytest.approx(row["update_norm"] / float(w0.norm()), rel=1e-12)
    # the model is left as it was
    assert torch.equal(task.model.weight.detach(), w0)


def test_single_linear_layer_adam_first_step_is_not_the_gradient_direction():
    task = _linear_task(seed=1)
    lr, eps = 1e-3, 1e-8
    with torch.enable_grad():
        loss = 0.5 * (task.model(task.x_train) - task.t_train).pow(2).sum(1).mean()
        (g,) = torch.autograd.grad(loss, task.model.weight)
    step = g / (g.abs() + eps)          # Adam's first step over lr (bias-corrected moments)
    expected_cos = float((step * g).sum() / (step.norm() * g.norm()))
    res = bench.signal(task, TrainConfig(method="bregman", solver="adam", lr=lr, batch_size=0,
                                         batched_layers=False), batches=1)
    (row,) = res["summary"]
    assert row["update_norm"] == pytest.approx(lr * float(step.norm()), rel=1e-6)
    assert row["cos_update"] == pytest.approx(expected_cos, rel=1e-6)
    assert row["cos_update"] < 0.99
    assert row["cos_lifted_grad"] == pytest.approx(1.0, abs=1e-12)


def test_parse_set_reads_numbers_booleans_and_inf():
    assert bench.parse_set(["lr=0.5", "state_order=top-down", "batched_layers=true", "tau=inf",
                            "state-steps=2"]) == \
        {"lr": 0.5, "state_order": "top-down", "batched_layers": True, "tau": math.inf, "state_steps": 2}
    with pytest.raises(SystemExit):
        bench.parse_set(["no_such_option=1"])
