"""Peak resident memory of ``lifted-inverse train --data FILE.h5`` against the file's size.

Writes (once; reused when present) an HDF5 file of ``--n`` CT pairs (``lifted-inverse data
--dataset ellipses --operator ct --size S``) and a file of ``--n-small`` pairs of the same shapes,
then runs, each in its own process (peak RSS of that process alone, from ``os.wait4``):

* ``train --data BIG --dry-run``: builds the task (imports, operator, validation and test
  images) and stops: the fixed cost;
* ``train --data BIG``: one epoch (or ``--time-budget`` seconds) of mini-batches read from disk;
* ``train --data SMALL``: the same on the small file: if the data were loaded whole, the peak
  would grow by the difference of the file sizes.

Usage: ``python benchmarks/bench_train_data.py [--n 2000] [--size 128] [--time-budget S]
[--val-fraction F] [--workdir DIR] [--json]``. Machine-dependent figures; run with ``nice`` on a
shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MIB = 2**20


def run_measured(argv: list[str]) -> dict:
    """Run ``argv`` in a child process: exit code, wall seconds and its peak RSS in MiB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux
    return {"rc": proc.returncode, "seconds": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "tail": output.strip().splitlines()[-1:] if output.strip() else []}


def ensure_file(path: Path, n: int, size: int, angles: int) -> Path:
    if not path.exists():
        cmd = [sys.executable, "-m", "lifted_inverse", "data", "--dataset", "ellipses", "--operator", "ct",
               "--n", str(n), "--size", str(size), "--angles", str(angles), "--batch-size", "64",
               "--out", str(path)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--n-small", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-fraction", type=float, default=0.02,
                        help="validation share of the file (held in memory and evaluated per epoch)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop each training run after this many seconds (default: one full epoch)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_train_data"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    big = ensure_file(args.workdir / f"ct_{args.n}x{args.size}.h5", args.n, args.size, args.angles)
    small = ensure_file(args.workdir / f"ct_{args.n_small}x{args.size}.h5", args.n_small, args.size, args.angles)
    train = [sys.executable, "-m", "lifted_inverse", "train", "--task", "unrolled-ct", "--threads", "1",
             "--epochs", "1", "--batch-size", str(args.batch_size), "--val-fraction", str(args.val_fraction)]
    if args.time_budget is not None:
        train += ["--time-budget", str(args.time_budget)]
    rows = {}
    for label, data, extra in (("dry-run (task built, no training)", big, ["--dry-run"]),
                               (f"train, {args.n} pairs", big, []),
                               (f"train, {args.n_small} pairs", small, [])):
        out = args.workdir / ("run_" + data.stem + ("_dry" if extra else ""))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        res = run_measured([*train, "--data", str(data), "--out", str(out), *extra])
        if res["rc"] != 0:
            print(f"{label}: failed (exit {res['rc']}): {res['tail']}", file=sys.stderr)
            return 1
        if not extra:
            metrics = json.loads((out / "metrics.json").read_text())
            res["n_train"] = metrics["description"]["data"]["n_train"]
            res["train_seconds"] = metrics["seconds"]
        res["file_mib"] = data.stat().st_size / MIB
        rows[label] = res
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    budget = "one epoch" if args.time_budget is None else f"{args.time_budget:g} s of training"
    print(f"unrolled-ct, {args.size}x{args.size}, {args.angles} angles, batch {args.batch_size}, "
          f"validation {args.val_fraction:g} of the file, {budget}, one thread")
    print("| run | file (MiB) | peak RSS (MiB) | peak RSS / file | wall (s) |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['file_mib']:.1f} | {r['peak_rss_mib']:.1f} | "
              f"{r['peak_rss_mib'] / r['file_mib']:.2f} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    sys.exit(main())
