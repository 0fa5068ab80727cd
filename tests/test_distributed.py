"""Training over 2 gloo processes equals the 1-process run (float64).

Two ``torchrun``-equivalent launches (``python -m torch.distributed.run --nproc-per-node 2``) of
``tests/distributed_worker.py``:

* data-parallel lifted training of every solver for a few mini-batch epochs, and the resume of
  a 1-process checkpoint on 2 ranks (this process computes the 1-process references and resumes
  the 2-process checkpoint on 1 rank);
* ``--more``: data parallel on an imaging task (lifted BCD, Adam backprop with DDP), backprop
  DDP on the synthetic task, and layer-parallel sweeps of an MLP, a residual network, a PNN
  and an unrolled deblurring network against the one-process :class:`StagedSolver` running the same order, plus
  layer-parallel training through the trainer with a resumed checkpoint;

and one on 4 ranks (``--grid``): layer parallel × data parallel on a 2 × 2 process grid against
the same one-process order.
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
from lifted_inverse.lifted.layer_parallel import StagedSolver, stage_bounds
from lifted_inverse.lifted.solvers import LiftedSolver, StateStore
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
    _launch(str(out), str(out / "ckpt_bcd_1.pt"))
    two = torch.load(out / "result_2.pt", weights_only=True)
    return out, ref, two


def _launch(*args: str, world: int = 2) -> None:
    """Run ``distributed_worker.py args`` on ``world`` gloo ranks (one thread each), started
    with the environment torchrun gives its workers (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``, ``LOCAL_RANK``) but without torchrun's agent, whose start-up and shut-down
    would double the time of these tests."""
    for _attempt in range(2):   # a second try on a fresh port: the probed free port can be taken
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent),
               "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).parent / "distributed_worker.py"), *args],
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for r in range(world)]
        outputs = []
        try:
            for p in procs:
                outputs.append(p.communicate(timeout=180)[0])
        finally:
            for p in procs:     # one rank failed and the other waits for it: end it
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if all(p.returncode == 0 for p in procs):
            return
    raise AssertionError("\n".join(o[-3000:] for o in outputs))


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


# ---- imaging, backprop and layer parallel (the ``--more`` launch) ------------------------------
@pytest.fixture(scope="module")
def more(tmp_path_factory):
    out = tmp_path_factory.mktemp("more")
    _launch("--more", str(out))
    return torch.load(out / "more_2.pt", weights_only=True)


def _params(task):
    return [p.detach() for p in task.model.parameters()]


@pytest.mark.parametrize("method", ["bregman", "backprop"])
def test_imaging_data_parallel_equals_one_process(more, method):
    task = dw.make_imaging_task()
    fresh = [p.clone() for p in _params(task)]
    res = train(task, dw.imaging_config(method))
    two = more[f"pnn-{method}"]
    assert _max_err(_params(task), two["params"]) < TOL
    assert max(abs(a - b) for a, b in zip(res["train_objective"], two["objective"])) < TOL
    assert _max_err(fresh, _params(task)) > 1e-4        # the weights moved
    if method == "bregman":     # some batch held no sample of one rank: the zero-contribution sweep ran
        assert two["absent_steps"] > 0


def test_backprop_ddp_equals_one_process(more):
    task = dw.make_synthetic_task()
    res = train(task, dw.make_config("adam", method="backprop"))
    two = more["synthetic-backprop"]
    assert _max_err(_params(task), two["params"]) < TOL
    assert max(abs(a - b) for a, b in zip(res["train_objective"], two["objective"])) < TOL


LP_TOL = 1e-6


@pytest.mark.parametrize("case", list(dw.LP_CASES))
def test_layer_parallel_equals_one_process_same_order(more, case):
    one = dw.run_layer_parallel(case, StagedSolver, stages=2)
    two = more[f"lp-{case}"]
    assert max(abs(a - b) for a, b in zip(one["values"], two["values"])) < LP_TOL
    params = [p.detach() for p in one["objective"].net.model.parameters()]
    assert _max_err(params, two["params"]) < LP_TOL
    states = {s: v for st in one["solver"].stages for s, v in st.store.states.items()}
    assert set(states) == set(two["states"])
    assert max(float((states[s] - two["states"][s]).abs().max()) for s in states) < LP_TOL
    fresh, _, _ = dw.lp_objective(dw.LP_CASES[case][0])
    assert _max_err([p.detach() for p in fresh.net.model.parameters()], params) > 1e-4


@pytest.mark.parametrize("case", ["mlp-bcd", "resnet-bcd", "deblur-bcd"])
def test_layer_parallel_sends_only_boundary_states(more, case):
    """Per sweep: the boundary states forward, their gradient terms (same size) and one Lipschitz
    number per state backward; nothing else travels between the stages."""
    staged = dw.run_layer_parallel(case, StagedSolver, stages=2)["solver"]
    first, second = staged.stages
    assert first.sends == second.receives and first.sends
    shapes = first.view.state_shapes
    per_sweep = 2 * dw.LP_BATCH * sum(torch.Size(shapes[s]).numel() for s in first.sends) + len(first.sends)
    assert more[f"lp-{case}"]["bytes"] == dw.LP_SWEEPS * per_sweep * 8


def test_layer_parallel_trainer_resumes_exactly(more):
    straight, resumed = more["trainer-lp-3"], more["trainer-lp-3-resumed"]
    assert _max_err(straight["params"], resumed["params"]) < 1e-10
    assert straight["objective"] == pytest.approx(resumed["objective"], abs=1e-10)
    assert straight["objective"][-1] < straight["objective"][0]
    fresh = _params(dw.make_synthetic_task())
    assert _max_err(fresh, straight["params"]) > 1e-3


@pytest.mark.parametrize("mode", ["dp", "lp"])
def test_time_budget_stops_every_rank_at_the_same_batch(more, mode):
    """Rank 1's clock runs 4x fast (``distributed_worker.time_budget_runs``): the ranks still
    agree on the elapsed time (the largest), so they run the same epochs and batches (else one
    would stop while the other waits in a collective) and report the same objective."""
    (epochs0, value0, seconds0), (epochs1, value1, seconds1) = more[f"time-budget-{mode}"]
    assert epochs0 == epochs1 >= 1
    assert value0 == pytest.approx(value1, rel=1e-12)
    assert seconds0 == seconds1 >= 0.6


def test_one_stage_is_the_lifted_solver():
    objective, x, t = dw.lp_objective("mlp")
    reference, x2, t2 = dw.lp_objective("mlp")
    staged = StagedSolver(objective, "nesterov", stages=1)
    staged.init_store(x)
    solver = LiftedSolver(reference, "nesterov")
    store = StateStore.from_forward(reference, x2)
    for ids in dw.lp_batches():
        assert staged.step(x[ids], t[ids], ids) == solver.step(x2[ids], t2[ids], store, ids)
    assert _max_err([p.detach() for p in objective.net.model.parameters()],
                    [p.detach() for p in reference.net.model.parameters()]) == 0


def test_forward_message_leaves_before_the_other_states_are_gathered():
    """``Stage.start`` gathers only the boundary states it sends (the message goes out at once),
    and ``gather`` fetches the rest, once (the sweeps' values: the 2-process equality tests)."""
    objective, x, t = dw.lp_objective("mlp")
    staged = StagedSolver(objective, "bcd", stages=2)
    staged.init_store(x)
    first = staged.stages[0]
    ids = dw.lp_batches()[0]
    gathered = []
    store_gather = first.store.gather
    first.store.gather = lambda i, only=None: gathered.append(list(only)) or store_gather(i, only)
    message = first.start(x[ids], t[ids], ids)
    assert gathered == [first.sends]
    boundary = torch.cat([first.store.states[s][ids].reshape(-1) for s in first.sends])
    assert torch.equal(message, boundary)
    first.gather()
    assert sorted(s for group in gathered for s in group) == sorted(first.view.free_states)
    first.gather()                               # a no-op once done
    assert len(gathered) == 2


def test_stage_bounds_keep_shared_weights_together():
    objective, _, _ = dw.lp_objective("mlp")
    assert stage_bounds(objective.net, 2) == [(0, 3), (3, 6)]
    assert stage_bounds(objective.net, 6) == [(i, i + 1) for i in range(6)]
    with pytest.raises(ValueError, match="layer_parallel"):
        stage_bounds(objective.net, 7)
    pnn, _, _ = dw.lp_objective("pnn-denoise")     # 4 dual layers; the image layer shares L_4
    assert stage_bounds(pnn.net, 2) == [(0, 2), (2, 5)]
    assert stage_bounds(pnn.net, 4)[-1] == (3, 5)


def test_layer_parallel_refusals(capsys):
    from lifted_inverse.cli import main
    from lifted_inverse.training import TrainConfig

    assert main(["train", "--dry-run", "--layer-parallel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--layer-parallel" in err
    with pytest.raises(ValueError, match="layer_parallel: no torch.distributed process group"):
        train(dw.make_synthetic_task(), dw.make_config("bcd", layer_parallel=2))
    objective, _, _ = dw.lp_objective("mlp")
    with pytest.raises(ValueError, match="layer_parallel: needs per-sample states"):
        StagedSolver(objective, "isgm")
    with pytest.raises(ValueError, match="layer_parallel: needs per-sample states"):
        StagedSolver(objective, "bcd", state_init="forward")
    assert TrainConfig(layer_parallel=2).user_fields() == {}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    _launch("--grid", str(out), world=4)
    return torch.load(out / "grid_4.pt", weights_only=True)


@pytest.mark.parametrize("case", dw.GRID_CASES)
def test_layer_and_data_parallel_grid_equals_one_process_same_order(grid, case):
    """2 stages × 2 data replicas = the one-process layer-parallel order on the whole batches
    (the last batch lies in one replica's shard: the other joins with zero contributions)."""
    one = dw.run_grid(case, StagedSolver, stages=2)
    four = grid[case]
    assert max(abs(a - b) for a, b in zip(one["values"], four["values"])) < LP_TOL
    params = [p.detach() for p in one["objective"].net.model.parameters()]
    assert _max_err(params, four["params"]) < LP_TOL
    states = {s: v for st in one["solver"].stages for s, v in st.store.states.items()}
    assert max(float((states[s] - four["states"][s]).abs().max()) for s in states) < LP_TOL


def test_trainer_grid_equals_two_stage_training(grid, more):
    """``layer_parallel=2, distributed=True`` on 4 ranks trains what 2 stages train on 2."""
    two, four = more["trainer-lp-3"], grid["trainer"]
    assert _max_err(two["params"], four["params"]) < LP_TOL
    assert two["objective"] == pytest.approx(four["objective"], abs=LP_TOL)
