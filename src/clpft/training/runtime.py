"""Process-wide settings of glibc's allocator for CPU training; none of them changes a result.

glibc serves a buffer above its mmap threshold (128 KiB to start) with mmap and returns it to the kernel on
free. But the threshold is *dynamic*: each time a mmapped buffer is freed, the threshold rises to that
buffer's size (up to 32 MiB), so from then on activations of that size come from the heap, and a heap only
shrinks from its top: a training step's freed activations stay resident in holes below the live ones, and
the process grows step after step (the quality benchmark's full runs reached 11-13 GB of peak RSS).

``CLPFT_MALLOC`` chooses; measured with benchmarks/speed.py's clpft-default training worker (batch 8 x
(query, positive, 4 negatives, 4 own queries), 256 tokens, 7 steps, the first 2 untimed, one process each,
alternating, the machine otherwise idle, 2026-12-03):

- ``trim`` (the default): glibc as it is, plus malloc_trim(3) after every training step, so the holes a
  step's freed activations left go back to the kernel and one step's garbage does not carry into the next:
  6.99-7.24 s per step, 7,092-7,194 MB (two runs);
- ``glibc``: glibc untouched: 7.11-7.51 s, 8,389-8,441 MB (three runs);
- ``bounded``: the mmap threshold fixed at 128 KiB (setting it turns the rise off): every large buffer is
  mmapped and unmapped, so resident memory follows what is live, paid for in page faults: 8.66-8.75 s,
  5,916 MB (two runs);
- ``reuse``: large buffers kept in the heap (mmap threshold 32 MiB, trim threshold 1 GiB, top pad 64 MiB;
  ``CLPFT_MALLOC_TUNING=1``, its earlier name, still selects it); an earlier speed.py run measured no gain.

A setting the user made through glibc's own MALLOC_*_ environment variables is left as it is. The modes
only move memory around: the same tensors hold the same numbers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource

# mallopt(3) parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}  # "reuse"
BOUNDED = {M_MMAP_THRESHOLD: 128 << 10}  # glibc's starting threshold, now fixed
MODES = {"bounded": BOUNDED, "reuse": SETTINGS, "glibc": {}, "trim": {}}
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def malloc_mode() -> str:
    """The allocator mode the environment asks for (see the module)."""
    if os.environ.get("CLPFT_MALLOC_TUNING") == "1":
        return "reuse"
    mode = os.environ.get("CLPFT_MALLOC", "trim")
    if mode not in MODES:
        from clpft.errors import ClpftError

        raise ClpftError(f"CLPFT_MALLOC must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_freed() -> None:
    """With ``CLPFT_MALLOC=trim``: hand the heap's free pages back to the kernel (malloc_trim(3)); called by the
    trainer after each training step, when that step's activations have just been freed."""
    if malloc_mode() == "trim" and (libc := _libc()) is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def bound_malloc() -> bool:
    """Apply ``malloc_mode()``'s settings to glibc; returns whether any were applied (not on other C
    libraries, not when the user set glibc's MALLOC_*_ variables, not for ``glibc``)."""
    settings = MODES[malloc_mode()]
    if not settings or any(name in os.environ for name in GLIBC_VARIABLES):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in settings.items())


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
