"""Data-parallel lifted training over 2 gloo processes equals the 1-process run (float64).

One ``torchrun``-equivalent launch (``python -m torch.distributed.run --nproc-per-node 2``) of
``tests/distributed_worker.py`` trains every solver for a few mini-batch epochs and resumes a
1-process checkpoint on 2 ranks; this process computes the 1-process references and resumes the
2-process checkpoint on 1 rank.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import distributed_worker as dw
import pytest
import torch

from lifted_inverse.lifted.distributed import AllReduce, Shard, communication_summary, gather_rows
from lifted_inverse.networks.checkpoint import load_checkpoint
from lifted_inverse.training import train

TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _states(path):
    """The per-sample lifted states a checkpoint stores for exact resume."""
    return load_checkpoint(path).trainer_state["step"]["states"]


def _max_err(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    ref = {}
    for solver in dw.SOLVERS:
        task = dw.make_synthetic_task()
        res = train(task, dw.make_config(solver), checkpoint=str(out / f"ckpt_{solver}_1.pt"))
        ref[solver] = {"params": [p.detach().clone() for p in task.model.parameters()],
                       "objective": res["train_objective"]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    for _attempt in range(2):   # a second try on a fresh port: the probed free port can be taken
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               str(Path(__file__).parent / "distributed_worker.py"), str(out), str(out / "ckpt_bcd_1.pt")]
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = torch.load(out / "result_2.pt", weights_only=True)
    return out, ref, two


@pytest.mark.parametrize("solver", dw.SOLVERS)
def test_two_processes_equal_one(runs, solver):
    out, ref, two = runs
    r1, r2 = ref[solver], two[solver]
    assert r2["spread"] == 0.0                      # replicas identical across ranks, bitwise
    assert _max_err(r1["params"], r2["params"]) < TOL
    assert max(abs(a - b) for a, b in zip(r1["objective"], r2["objective"])) < TOL
    # training moved the weights, so the comparison is not between two untouched models
    fresh = [p.detach() for p in dw.make_synthetic_task().model.parameters()]
    assert _max_err(fresh, r1["params"]) > 1e-3
    assert r2["shard"] == 25
    if solver in ("isgm", "bcd-forward"):   # states from forward passes: none stored
        assert _states(out / f"ckpt_{solver}_2.pt") is None
    else:   # states gathered by sample id equal the 1-process states
        s1 = _states(out / f"ckpt_{solver}_1.pt")
        s2 = _states(out / f"ckpt_{solver}_2.pt")
        assert set(s1) == set(s2)
        assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) < TOL


def test_bytes_per_sweep_are_the_weight_gradients(runs):
    _, _, two = runs
    comm = two["bcd"]["comm"]
    sweeps = two["bcd"]["sweeps"]
    numel = sum(p.numel() for p in dw.make_synthetic_task().model.parameters())
    assert comm["gradient_calls"] == sweeps
    assert comm["gradient_bytes"] == sweeps * numel * 8 == sweeps * comm["expected_gradient_bytes"]
    assert comm["statistics_bytes"] == sweeps * 2 * 8
    # Lipschitz power iterations: Σ_l (d_in + 1) per iteration, 20 iterations first, then 3
    per_iter = (12 + 1) + (16 + 1) + (16 + 1)
    assert comm["lipschitz_bytes"] == (20 + 3 * (sweeps - 1)) * per_iter * 8


def test_resume_on_another_number_of_ranks(runs):
    out, _, two = runs
    task = dw.make_synthetic_task()
    cfg = dw.make_config("bcd")
    cfg.epochs = dw.EPOCHS + 1
    straight = train(task, cfg)
    p_straight = [p.detach().clone() for p in task.model.parameters()]
    # 2 ranks -> 1 rank
    task = dw.make_synthetic_task()
    cfg = dw.make_config("bcd")
    cfg.epochs = dw.EPOCHS + 1
    resumed = train(task, cfg, resume=str(out / "ckpt_bcd_2.pt"))
    assert _max_err(p_straight, [p.detach() for p in task.model.parameters()]) < TOL
    assert abs(resumed["train_objective"][-1] - straight["train_objective"][-1]) < TOL
    # 1 rank -> 2 ranks (done by the worker)
    assert _max_err(p_straight, two["resume"]["params"]) < TOL
    assert len(two["resume"]["objective"]) == dw.EPOCHS + 1


def test_shard_split_and_select():
    shards = [Shard.of(10, r, 3) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 7), (7, 10)]
    mine, local = shards[1].select(torch.tensor([9, 5, 0, 4, 6]))
    assert mine.tolist() == [5, 4, 6] and local.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="rank"):
        Shard.of(10, 3, 3)
    with pytest.raises(ValueError, match="rows"):
        shards[0].rows(torch.zeros(9, 2))


def test_single_process_hook_is_identity_and_logged():
    comm = AllReduce()
    a, b = torch.ones(3, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    out = comm([a, b])
    assert out[0] is a and out[1] is b
    assert comm.bytes == 10 * 8 and comm.calls == 1
    params = [torch.zeros(3, 2), torch.zeros(4)]
    summary = communication_summary([([6, 4, 2], 4), ([2, 1], 4)], params)
    assert summary["gradient_bytes"] == 40 and summary["statistics_bytes"] == 8
    assert summary["lipschitz_bytes"] == 12 and summary["expected_gradient_bytes"] == 40
    full = gather_rows(torch.arange(6.0).view(3, 2), Shard.of(3, 0, 1))
    assert torch.equal(full, torch.arange(6.0).view(3, 2))
