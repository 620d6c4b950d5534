"""clpft.training.runtime: the allocator setting that keeps a training process's resident memory to what is live."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from clpft.errors import ClpftError
from clpft.training.runtime import bound_malloc, malloc_mode

# glibc's dynamic mmap threshold: freeing a 16 MB buffer raises it to 16 MB, so the 8 MB buffers that follow come
# from the heap, and freeing all of them but the newest (the heap's top) leaves them resident.
RETAINED_MB = """
import os, sys, torch
if sys.argv[1] != "none":
    os.environ["CLPFT_MALLOC"] = sys.argv[1]
    from clpft.training.runtime import bound_malloc
    print(bound_malloc())
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
big = torch.ones(4 << 20)
del big
before = resident()
blocks = [torch.ones(2 << 20) for _ in range(50)]
newest = blocks[-1]
del blocks
if len(sys.argv) > 2:  # what the trainer does after each training step
    from clpft.training.runtime import release_freed
    release_freed()
print((resident() - before) / 2**20)
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc's allocator"
)


def retained_mb(mode: str, release: bool = False) -> tuple[list[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CLPFT_MALLOC"))}
    command = [sys.executable, "-c", RETAINED_MB, mode, *(["release"] if release else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    *applied, retained = done.stdout.split()
    return applied, float(retained)


@glibc_only
def test_bounded_returns_freed_activations_and_glibc_alone_keeps_them():
    assert ctypes.util.find_library("c")
    applied, untouched = retained_mb("none")
    assert untouched > 200  # about 392 MB of the 400 freed stay resident: the growth the settings stop
    applied, bounded = retained_mb("bounded")
    assert applied == ["True"] and bounded < 50
    applied, glibc = retained_mb("glibc", release=True)
    assert applied == ["False"] and glibc > 200  # glibc: the trainer's release does nothing


@glibc_only
def test_trim_the_default_hands_a_steps_freed_memory_back_after_the_step():
    applied, before_release = retained_mb("trim")
    assert applied == ["False"] and before_release > 200  # no allocator setting: glibc's speed within a step
    _, after_release = retained_mb("trim", release=True)
    assert after_release < 50
    _, default = retained_mb("none", release=True)  # CLPFT_MALLOC unset is trim
    assert default < 50


def test_the_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("CLPFT_MALLOC", raising=False)
    monkeypatch.delenv("CLPFT_MALLOC_TUNING", raising=False)
    assert malloc_mode() == "trim"
    monkeypatch.setenv("CLPFT_MALLOC_TUNING", "1")  # the earlier name of "reuse"
    assert malloc_mode() == "reuse"
    monkeypatch.delenv("CLPFT_MALLOC_TUNING")
    monkeypatch.setenv("CLPFT_MALLOC", "fast")
    with pytest.raises(ClpftError, match="CLPFT_MALLOC must be one of bounded, reuse, glibc, trim, got 'fast'"):
        bound_malloc()


def test_glibcs_own_variables_win(monkeypatch):
    monkeypatch.delenv("CLPFT_MALLOC", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert bound_malloc() is False


def test_a_bad_mode_is_one_line_from_the_command():
    env = {**os.environ, "CLPFT_MALLOC": "fast"}
    done = subprocess.run(
        [sys.executable, "-m", "clpft.cli", "eval", "--help"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0  # --help exits before any work
    done = subprocess.run(
        [sys.executable, "-m", "clpft.cli", "eval", "--data", "/nonexistent"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "clpft: error: CLPFT_MALLOC must be one of bounded, reuse, glibc, trim, got 'fast'"
    ]
