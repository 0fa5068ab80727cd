"""Process settings: glibc's allocator keeps freed memory after ``retain_freed_memory``."""
import ctypes
import ctypes.util
import subprocess
import sys

import pytest
import torch

from lifted_inverse import runtime

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"),
                                                       "mallopt")


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_retain_freed_memory_sets_glibc_thresholds_once():
    # in a fresh interpreter: the call succeeds, is idempotent, and freed blocks are reused
    code = (
        "import ctypes, ctypes.util\n"
        "from lifted_inverse.runtime import retain_freed_memory\n"
        "assert retain_freed_memory() is True and retain_freed_memory() is True\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')\n"
        "libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "a = libc.malloc(8 << 20); libc.free(a); b = libc.malloc(8 << 20)\n"
        "assert a == b, 'an 8 MiB block freed and asked for again comes from the heap'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_refused_thresholds_report_false(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.retain_freed_memory() is False


def test_checked_device_names_the_argument():
    from lifted_inverse.runtime import checked_device

    assert checked_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device: not a device"):
        checked_device("gpu0", "--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device: 'cuda' requested but CUDA is not available"):
            checked_device("cuda", "--device")
