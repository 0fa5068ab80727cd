"""A training run stopped from outside (SIGKILL, Ctrl-C) leaves the checkpoint of its last
finished epoch, which loads and resumes; Ctrl-C exits 130 with one line, no traceback."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lifted_inverse.cli import main
from lifted_inverse.networks.checkpoint import load_checkpoint


def _start(out):
    cmd = [sys.executable, "-m", "lifted_inverse", "train", "--task", "digits-mlp", "--method", "backprop",
           "--epochs", "100000", "--batch-size", "8", "--threads", "1", "--out", str(out)]
    # a shell's background jobs inherit SIGINT ignored, and Python then keeps ignoring it: start the
    # run with the default disposition, as a terminal's Ctrl-C finds it
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_epochs(out, proc, epochs: int, timeout: float = 120.0) -> None:
    ck = out / "checkpoint.pt"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stderr.read()}")
        if ck.exists():
            try:
                if load_checkpoint(ck).epoch >= epochs:
                    return
            except (ValueError, OSError):
                pass                      # only an atomic rename is ever seen; retry
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_run_leaves_a_resumable_checkpoint(tmp_path, sig):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_epochs(out, proc, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
        assert not [p for p in out.iterdir() if p.name.startswith(".")]   # a write in flight is removed
    else:
        assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(out / "checkpoint.pt")
    done = ck.epoch
    assert done >= 2 and len(ck.trainer_state["history"]) == done
    rc = main(["train", "--task", "digits-mlp", "--method", "backprop", "--epochs", str(done + 1),
               "--batch-size", "8", "--threads", "1", "--out", str(tmp_path / "more"),
               "--resume", str(out / "checkpoint.pt")])
    assert rc == 0
    hist = json.loads((tmp_path / "more" / "metrics.json").read_text())["history"]
    assert len(hist) == done + 1 and hist[:done] == ck.trainer_state["history"]
