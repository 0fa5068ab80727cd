"""Every ``train`` flag either takes effect for the chosen task and method (its value is in the
resolved config with source 'user', or in the task description) or exits 2 with one line
naming the flag. Nothing is accepted and ignored.

``--dry-run`` builds the task, resolves the config and builds the update step (where a real run
raises for an option that does not apply) without training.
"""
import json

import pytest

from lifted_inverse.cli import main

#: flag -> (value, config field). Every config-level option of ``train``.
CONFIG_FLAGS = {
    "--epochs": ("3", "epochs"), "--time-budget": ("5", "time_budget"),
    "--batch-size": ("16", "batch_size"), "--lr": ("0.01", "lr"), "--seed": ("4", "seed"),
    "--lr-schedule": ("cosine", "lr_schedule"), "--state-steps": ("2", "state_steps"),
    "--state-init": ("forward", "state_init"), "--state-order": ("top-down", "state_order"),
    "--state-lr": ("1.5", "state_lr"), "--lam": ("0.5", "lam"), "--rho": ("2", "rho"),
    "--tau": ("0.5", "tau"), "--inner-sweeps": ("2", "inner_sweeps"), "--momentum": ("0.5", "momentum"),
    "--power-iterations": ("4", "power_iterations"), "--batched-layers": (None, "batched_layers"),
    "--no-batched-layers": (None, "batched_layers"), "--regularizer": ("l2", "regularizer"),
    "--reg-strength": ("0.001", "reg_strength"), "--select": ("last", "select"),
    "--checkpoint-every": ("2", "checkpoint_every"), "--eval-every": ("2", "eval_every"),
}
#: flag -> (value, description key) for options the task reads
TASK_FLAGS = {"--noise": ("0.1", "noise"), "--data": ("somewhere", None), "--features": ("4", "network"),
              "--layers": ("2", "network"), "--n-train": ("8", "n_train")}
LIFTED_ONLY = {"--state-steps", "--state-init", "--state-order", "--state-lr", "--lam", "--rho", "--tau",
               "--inner-sweeps", "--momentum", "--power-iterations", "--batched-layers",
               "--no-batched-layers"}

FAMILIES = {  # task family -> (task, extra arguments)
    "classifier": ("digits-mlp", []),
    "autoencoder": ("digits-autoencoder", []),
}
METHODS = {"lifted": ["--method", "bregman", "--solver", "adam"],
           "lifted-bcd": ["--method", "bregman", "--solver", "bcd"],
           "backprop": ["--method", "backprop", "--solver", "adam"]}


def expected_error(family: str, method: str, flag: str) -> bool:
    """Where a flag does not apply (the table the test holds the CLI to)."""
    if method == "backprop" and flag in LIFTED_ONLY:
        return True
    if flag == "--lr-schedule" and method == "lifted-bcd":
        return True
    if flag == "--batched-layers" and family == "autoencoder":      # not a uniform chain
        return True
    if family in ("classifier", "autoencoder"):
        if flag in ("--data", "--features", "--layers", "--n-train"):
            return True
        if flag == "--noise" and family == "classifier":
            return True
    return False


def _run(capsys, argv):
    rc = main(["train", "--dry-run", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_flag_applies_or_is_refused(capsys, family, method):
    task, extra = FAMILIES[family]
    base = ["--task", task, *extra, *METHODS[method]]
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


def test_dry_run_reports_the_default_sources(capsys):
    rc, out, _ = _run(capsys, ["--task", "digits-mlp", "--method", "bregman", "--solver", "bcd"])
    assert rc == 0
    sources = json.loads(out)["config"]["sources"]
    assert sources["lam"] == "task" and sources["rho"] == "engine" and sources["method"] == "user"
