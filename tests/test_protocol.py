"""benchmarks/protocol.py: equal search budget, selection on validation only, paired t-interval."""
import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "protocol.py"
_spec = importlib.util.spec_from_file_location("protocol", _PATH)
protocol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protocol)

TINY = {"hidden_layers": 1, "width": 16}


def _recording_train(monkeypatch, test_value=None):
    """Wrap the protocol's ``train``: record every (method, solver, lr, lam, state_lr, seed) and, when
    ``test_value`` is given, overwrite the test metric with ``test_value(call index)``."""
    calls = []
    real = protocol.train

    def fake(task, cfg, **kw):
        r = real(task, cfg, **kw)
        calls.append((cfg.method, cfg.solver, cfg.lr, cfg.lam, cfg.state_lr, cfg.seed))
        if test_value is not None:
            r[f"test_{task.metric}"] = test_value(len(calls))
        return r

    monkeypatch.setattr(protocol, "train", fake)
    return calls


@pytest.mark.parametrize("budget", [1, 3])
def test_each_method_gets_exactly_budget_configurations(monkeypatch, budget):
    calls = _recording_train(monkeypatch)
    res = protocol.run_protocol("digits-mlp", ("backprop/adam", "bregman/bcd"), budget=budget, seeds=2,
                                tuning_seeds=1, epochs=1, extra=TINY)
    for method in ("backprop/adam", "bregman/bcd"):
        assert len(res["methods"][method]["search"]) == budget
        name = method.split("/")[0]
        tuning = {c[2:5] for c in calls if c[0] == name and c[5] >= protocol.TUNING_SEED0}
        assert len(tuning) == budget          # distinct configurations actually trained
        test_seeds = [c[5] for c in calls if c[0] == name and c[5] < protocol.TUNING_SEED0]
        assert test_seeds == [0, 1]


def test_configurations_are_distinct_seeded_and_bounded():
    space = protocol.search_space("bregman/bcd")
    size = math.prod(len(v) for v in space.values())
    a = protocol.configurations(space, 5, seed=3)
    assert a == protocol.configurations(space, 5, seed=3)
    assert len({tuple(sorted(p.items())) for p in a}) == 5
    assert len(protocol.configurations(space, size, seed=0)) == size
    with pytest.raises(ValueError, match="search space has"):
        protocol.configurations(space, size + 1, seed=0)
    assert protocol.search_space("bregman/adam") is protocol.SEARCH_SPACES["lifted/*"]
    assert protocol.search_space("backprop/sgd") is protocol.SEARCH_SPACES["backprop/*"]


def test_selection_reads_validation_only(monkeypatch):
    """Garbage test metrics (a different value on every call) leave the choice unchanged."""
    kw = {"budget": 3, "tuning_seeds": 1, "epochs": 2, "extra": TINY}
    clean = protocol.tune("digits-mlp", "backprop/adam", **kw)
    _recording_train(monkeypatch, test_value=lambda i: (-1) ** i * 1e3 * i)
    garbage = protocol.tune("digits-mlp", "backprop/adam", **kw)
    assert garbage["best"] == clean["best"]
    assert [t["val"] for t in garbage["trials"]] == [t["val"] for t in clean["trials"]]


def test_selection_picks_best_mean_validation(monkeypatch):
    """With validation scores set by the step and test scores anti-correlated, the largest
    validation mean wins (first one on a tie)."""
    def fake(task, cfg, **kw):
        return {"val_accuracy": -abs(math.log(cfg.lr / 1e-3)), "test_accuracy": abs(math.log(cfg.lr))}

    monkeypatch.setattr(protocol, "train", fake)
    res = protocol.tune("digits-mlp", "backprop/adam", budget=7, tuning_seeds=2, extra=TINY)
    assert res["best"] == {"lr_factor": 1.0}   # digits backprop/adam step: 1e-3
    assert all(len(t["val"]) == 2 for t in res["trials"])


def test_paired_interval_known_numbers():
    # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302652729911275
    p = protocol.paired_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert p["diffs"] == [1.0, 2.0, 3.0]
    assert p["mean"] == pytest.approx(2.0) and p["sd"] == pytest.approx(1.0)
    assert p["low"] == pytest.approx(2.0 - half) and p["high"] == pytest.approx(2.0 + half)
    assert p["differs"] is False                # 2 − 2.484 < 0
    q = protocol.paired_interval([1.1, 1.2, 1.3, 1.2], [1.0, 1.0, 1.0, 1.0])
    assert q["differs"] is True and q["low"] > 0
    with pytest.raises(ValueError):
        protocol.paired_interval([1.0], [0.0])


def test_markdown_reports_every_method_and_verdict():
    res = protocol.run_protocol("digits-mlp", ("backprop/adam", "bregman/adam"), budget=1, seeds=2,
                                tuning_seeds=1, epochs=1, extra=TINY)
    text = protocol.markdown(res)
    assert "`backprop/adam`" in text and "`bregman/adam` − `backprop/adam`" in text
    assert ("no difference" in text) != ("better" in text)
