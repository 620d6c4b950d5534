"""Process-wide settings that make CPU training faster without changing any result.

glibc's allocator hands buffers above its mmap threshold straight back to the kernel when they are
freed, so a training step that allocates and frees the same large activation buffers every step pays
page faults for all of them again (measured on this project's machine: about half the CPU time of a
sentence-transformers step was kernel time). Raising the mmap and trim thresholds keeps that memory in
the heap for reuse. This is exactly what the environment variables MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ do, applied with mallopt(3) so that ``clpft`` needs no
wrapper script. It is opt-in (CLPFT_MALLOC_TUNING=1): on this project's 2-core machine
benchmarks/speed.py measured no gain from it for either clpft or sentence-transformers (both ran 5-7%
slower, within the run-to-run noise), so clpft leaves the allocator alone unless asked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource

# mallopt(3) parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}


def tune_malloc() -> bool:
    """Apply the settings on glibc when CLPFT_MALLOC_TUNING=1; returns whether they were applied."""
    if os.environ.get("CLPFT_MALLOC_TUNING", "0") != "1":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
