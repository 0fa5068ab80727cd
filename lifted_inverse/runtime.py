"""Process-level settings for training and reconstruction runs (called by the CLI and benchmarks,
never on import): threads (:func:`set_threads`), progress bars (:func:`show_progress`), the
allocator (:func:`retain_freed_memory`), and :func:`checked_device` (a device name, validated
once for every entry point).

:func:`set_threads`: PyTorch starts one intra-op thread per core. When another job runs on the
same cores, a thread that waits for a busy core stalls every parallel region, and the run slows
down several times over instead of sharing the cores; one thread per process degrades gracefully.
The default (``threads=None``, :data:`DEFAULT_THREADS`) is therefore one thread; give
``--threads N`` on a machine the job has to itself (docs/results.md, "Threads under a concurrent
job", has the measurement).

:func:`retain_freed_memory`: glibc serves allocations above ``M_MMAP_THRESHOLD`` with fresh
``mmap`` pages and returns freed heap tops above ``M_TRIM_THRESHOLD`` to the kernel, so a loop
that allocates megabyte-sized temporaries (feature maps of unrolled networks: 32×24×40×40 floats
are 4.9 MB) page-faults and zero-fills every one of them again. Raising both thresholds keeps
the freed memory in the heap for reuse — the same effect as the jemalloc/tcmalloc preloading that
PyTorch's CPU tuning guides recommend, without a preload. It shortens the lifted PNN step, whose
block updates allocate such temporaries, and leaves backprop's unchanged (docs/results.md). The
price is that the process keeps its peak heap size.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024     # glibc's ceiling on 64-bit systems (4 MiB · sizeof(long))

_applied: bool | None = None


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 1 << 40) -> bool:
    """Keep freed memory in the process heap (module docstring). Returns whether glibc accepted
    the settings (False on other C libraries and platforms, where nothing changes)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = min(int(trim_threshold), 2**31 - 1)
    _applied = bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, trim))
    return _applied


#: intra-op threads when none are asked for (module docstring)
DEFAULT_THREADS = 1


def set_threads(threads: int | None = None) -> int:
    """``torch.set_num_threads(threads)``, :data:`DEFAULT_THREADS` for ``None``; returns the count
    set. Raises ``ValueError`` naming ``threads`` unless it is an integer >= 1."""
    if threads is None:
        threads = DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def show_progress(progress: bool | None, stream=None) -> bool:
    """Whether to draw progress bars: ``progress`` when given, else whether ``stream`` (default
    ``sys.stderr``, where tqdm draws) is a terminal, so logs stay free of bar redraws."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def checked_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``torch.device(device)``; a clear error naming ``name`` for an unknown device string or
    a CUDA device on a machine without CUDA."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name}: not a device ({device!r}: {err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {str(device)!r} requested but CUDA is not available")
    return dev
