"""Parallel lifted sweeps on this machine (issue 6).

(a) Layer parallelism: one BCD sweep (odd/even state steps + all W-blocks) of a 10-layer MLP
    64-256×9-10 (ReLU, softmax output, lifted Bregman) with the per-layer loop
    (``LiftedSolver``) vs the batched layers (``BatchedLiftedSolver``), float32, 1 thread, for
    several mini-batch sizes; median of repeated sweeps.
(b) Data parallelism: the same network on N synthetic samples, mini-batch sweeps, 1 vs 2
    processes (gloo, 1 thread each, launched by ``torch.distributed.run``); time per sweep
    (max over ranks), bytes all-reduced per sweep split into W-gradients (checked against
    ``Σ_l |W_l| + |b_l|`` × element size), statistics and Lipschitz power-iteration products.

Run: ``.venv/bin/python benchmarks/bench_parallel.py [--quick]``. Figures: docs/scaling.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lifted_inverse.runtime import retain_freed_memory

WIDTHS = (64,) + (256,) * 9 + (10,)


def build(n: int, seed: int = 0, dtype=torch.float32, device="cpu"):
    from lifted_inverse.lifted import Softmax, lift
    from lifted_inverse.lifted.objective import LiftedObjective
    from lifted_inverse.networks import mlp

    torch.manual_seed(seed)
    model = mlp(WIDTHS).to(dtype=dtype, device=device)
    obj = LiftedObjective(lift(model, output_activation=Softmax()), "bregman")
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, WIDTHS[0], generator=gen, dtype=dtype)
    t = torch.nn.functional.one_hot(torch.randint(0, WIDTHS[-1], (n,), generator=gen), WIDTHS[-1]).to(dtype)
    return model, obj, x.to(device), t.to(device)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


BLOCK = 5     # sweeps per solver and round


def bench_layers(batches, repeats: int, clock: str = "wall", device: str = "cpu") -> list[dict]:
    """Median seconds per sweep of the per-layer loop and the batched solver, in alternating
    rounds of ``BLOCK`` sweeps each (drift of a shared machine hits both alike; the first sweep of
    a round, which refills caches the other solver evicted, is not timed); ``clock='cpu'``:
    process CPU time (CPU runs)."""
    from lifted_inverse.lifted.batched import BatchedLiftedSolver
    from lifted_inverse.lifted.solvers import LiftedSolver, StateStore

    dev = torch.device(device)
    now = CLOCK[clock]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for bs in batches:
        runs = {}
        for name, cls in (("loop", LiftedSolver), ("batched", BatchedLiftedSolver)):
            _model, obj, x, t = build(4 * bs, device=dev)
            runs[name] = (cls(obj, "bcd"), x, t, StateStore.from_forward(obj, x))
        gen = torch.Generator().manual_seed(5)
        times: dict[str, list] = {name: [] for name in runs}
        for rep in range(repeats + 1):                  # the first round is warm-up
            batches = [torch.randperm(4 * bs, generator=gen)[:bs].to(dev) for _ in range(BLOCK)]
            for name, (solver, x, t, store) in runs.items():
                for k, ids in enumerate(batches):
                    sync()
                    t0 = now()
                    solver.step(x[ids], t[ids], store, ids)
                    sync()
                    if rep >= 1 and k >= 1:             # the block's first sweep refills the caches
                        times[name].append(now() - t0)
        row = {"batch": bs, **{name: statistics.median(v) for name, v in times.items()}}
        row["speedup"] = row["loop"] / row["batched"]
        rows.append(row)
        print(f"(a) batch {bs:5d}: per-layer loop {row['loop'] * 1e3:8.2f} ms/sweep, batched "
              f"{row['batched'] * 1e3:8.2f} ms/sweep, speedup {row['speedup']:.2f}x ({dev.type})", flush=True)
    return rows


def worker(out: str, n: int, batch: int, sweeps: int, batched: bool) -> None:
    """One rank of (b): shard of the samples, sweeps timed, communication logged."""
    from lifted_inverse.lifted.batched import BatchedLiftedSolver
    from lifted_inverse.lifted.distributed import (
        AllReduce,
        Shard,
        communication_summary,
        init_from_env,
    )
    from lifted_inverse.lifted.solvers import LiftedSolver, StateStore

    torch.set_num_threads(1)
    retain_freed_memory()   # every run alike: freed heap memory is reused (lifted_inverse.runtime)
    info = init_from_env("cpu")
    _model, obj, x, t = build(n)
    shard = Shard.of(n, info.rank, info.world_size)
    comm = AllReduce()
    cls = BatchedLiftedSolver if batched else LiftedSolver
    solver = cls(obj, "bcd", reduce_fn=comm)
    store = StateStore.from_forward(obj, x[shard.start:shard.stop])
    gen = torch.Generator().manual_seed(5)
    times = []
    for k in range(sweeps + 2):
        ids = torch.randperm(n, generator=gen)[:batch]
        mine, local = shard.select(ids)
        torch.distributed.barrier()
        t0 = time.perf_counter()
        solver.step(x[mine], t[mine], store, local)
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        torch.distributed.all_reduce(dt, op=torch.distributed.ReduceOp.MAX)  # slowest rank
        if k == 1:
            comm.reset()       # count bytes from the third sweep (after the 20-iteration start)
        if k >= 2:
            times.append(float(dt))
    summary = communication_summary(comm.log, list(solver.flat_params))
    if info.is_main:
        res = {"world": info.world_size, "seconds_per_sweep": statistics.median(times),
               "sweeps_logged": sweeps, **summary}
        Path(out).write_text(json.dumps(res))
    torch.distributed.destroy_process_group()


def launch(nproc: int, n: int, batch: int, sweeps: int, batched: bool) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(port), __file__, "--worker", str(out),
               "--samples", str(n), "--bench-batch", str(batch), "--bench-sweeps", str(sweeps)] + (["--batched"] if batched else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(out.read_text())


def bench_ranks(n: int, batch: int, sweeps: int, batched: bool) -> list[dict]:
    rows = [launch(p, n, batch, sweeps, batched) for p in (1, 2)]
    base = rows[0]["seconds_per_sweep"]
    numel = sum(p.numel() for p in build(1)[0].parameters())
    for r in rows:
        k = r["sweeps_logged"]
        per = {key: r[key] / k for key in ("gradient_bytes", "statistics_bytes", "lipschitz_bytes", "total_bytes")}
        ok = per["gradient_bytes"] == numel * 4 == r["expected_gradient_bytes"]
        print(f"(b) {'batched' if batched else 'loop'} P={r['world']}: {r['seconds_per_sweep'] * 1e3:8.2f} ms/sweep "
              f"(speedup {base / r['seconds_per_sweep']:.2f}x); all-reduced per sweep: W-gradients "
              f"{per['gradient_bytes']:.0f} B (Σ|W|+|b| = {numel} × 4 B: {'OK' if ok else 'MISMATCH'}), "
              f"statistics {per['statistics_bytes']:.0f} B, Lipschitz products {per['lipschitz_bytes']:.0f} B, "
              f"total {per['total_bytes']:.0f} B in {r['calls'] / k:.0f} all_reduce calls", flush=True)
        r.update(per_sweep=per, gradient_bytes_ok=ok)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--bench-batch", type=int, default=2048)
    ap.add_argument("--bench-sweeps", type=int, default=8)
    ap.add_argument("--batched", action="store_true")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="(a): wall-clock or process CPU time per sweep")
    ap.add_argument("--device", default="cpu", help="(a) on this device (e.g. cuda); (b) always runs on CPU")
    ap.add_argument("--layers-only", action="store_true", help="run (a) only")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.samples, args.bench_batch, args.bench_sweeps, args.batched)
        return
    torch.set_num_threads(1)
    retain_freed_memory()   # every run alike: freed heap memory is reused (lifted_inverse.runtime)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 thread per process, float32; "
          f"MLP {'-'.join(map(str, WIDTHS))}")
    batches = (16, 64) if args.quick else (8, 16, 32, 64, 256, 1024)
    bench_layers(batches, repeats=5 if args.quick else 20, clock=args.clock, device=args.device)
    if args.layers_only:
        return
    sweeps = 4 if args.quick else args.bench_sweeps
    for batched in (False, True):
        bench_ranks(args.samples, args.bench_batch, sweeps, batched)


if __name__ == "__main__":
    main()
