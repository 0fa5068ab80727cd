"""Default thread count against ``--threads 1`` while another job shares the cores.

A busy loop (one Python process spinning) runs beside every measurement, standing for the other
job on the machine. Alternating the two settings, it runs

* a digits training (``lifted-inverse train --task digits-mlp --epochs E``): ``seconds_per_epoch``;
* a TV reconstruction (``lifted-inverse reconstruct --operator ct --method tv``): ``seconds``;

with the command's default threads and with one thread, and prints the medians and the ratio
default / one thread. Where a command has no ``--threads`` flag, one thread is requested by
``OMP_NUM_THREADS=1`` instead. Usage::

    python benchmarks/bench_threads.py --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _has_threads_flag(command: str) -> bool:
    text = subprocess.run([sys.executable, "-m", "lifted_inverse", command, "--help"], capture_output=True,
                          text=True, check=True).stdout
    return "--threads" in text


def _run(argv: list[str], one_thread: bool, flag: bool, key: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    argv = list(argv)
    if one_thread:
        if flag:
            argv += ["--threads", "1"]
        else:
            env["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "lifted_inverse", *argv, "--out", str(out)], env=env,
                       check=True, capture_output=True)
        return float(json.loads((out / "metrics.json").read_text())[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--no-busy", action="store_true", help="no busy loop beside the runs")
    args = parser.parse_args()
    jobs = {
        "digits epoch (ms)": (["train", "--task", "digits-mlp", "--epochs", str(args.epochs)],
                              "seconds_per_epoch", _has_threads_flag("train"), 1e3),
        "TV reconstruction (s)": (["reconstruct", "--operator", "ct", "--method", "tv", "--size",
                                   str(args.size), "--iterations", str(args.iterations), "--tol", "1e-12"],
                                  "seconds", _has_threads_flag("reconstruct"), 1.0),
    }
    busy = None if args.no_busy else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        times = {name: {"default": [], "one": []} for name in jobs}
        for _ in range(args.reps):
            for name, (argv, key, flag, scale) in jobs.items():
                for setting in ("default", "one"):
                    times[name][setting].append(scale * _run(argv, setting == "one", flag, key))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, busy loop: {busy is not None}",
          flush=True)
    for name, t in times.items():
        d, o = statistics.median(t["default"]), statistics.median(t["one"])
        print(f"{name}: default threads {d:.1f}, --threads 1 {o:.1f}, ratio default/one {d / o:.2f} "
              f"(runs: default {[round(v, 1) for v in t['default']]}, one {[round(v, 1) for v in t['one']]})",
              flush=True)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line reaches a log as it is printed
    main()
