"""Keep big tensors' memory in the process instead of faulting it in again every step.

glibc serves allocations above its mmap threshold (a model step's 64 MB logits: the dynamic
threshold stops at 32 MB) with fresh ``mmap``s and unmaps them when freed, so each training step
page-faults that memory in again: ~85,000 faults a model step on the default shape. Serving big
blocks from the heap and never trimming it makes the faults disappear: model steps 1.5x faster
here; SAE steps, whose 8 MB temporaries glibc's dynamic threshold already keeps, barely change
(``benchmarks/bench_malloc.py``; RESULTS.md has the figures). Freed blocks are reused, so peak
memory does not grow; the process just keeps its peak until it exits.

``tune_malloc()`` does this through ``mallopt`` at run time (glibc only; elsewhere a no-op). The
training and indexing entry points call it. ``MONO_MALLOC_TUNING=0`` turns it off. Build
workers also get the equivalent environment (``MALLOC_TUNING``) from their first allocation.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MALLOC_TUNING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_done = False


def tune_malloc() -> bool:
    """Apply the tuning once per process; True if glibc accepted it."""
    global _done
    if _done:
        return True
    if os.environ.get("MONO_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the trim threshold is an int here: 2**31 - 1 bytes (2 GB) of free heap may stay untrimmed
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def release_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``); True if any were.

    With the tuning above freed tensors stay in the heap, which is what makes training steps
    fast; between two large jobs of one process (the SAE family's sizes, up to 131,072 features
    on the paper preset) their free pages would otherwise add to the next one's peak.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
