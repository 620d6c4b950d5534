"""Fault points for fault-injection tests: ``CLPFT_KILL_AT=NAME[:N]`` ends the process with SIGKILL the N-th
time (default: the first) it passes the point NAME, as a crash or ``kill -9`` would at that moment.
``CLPFT_PAUSE_AT=NAME[:N]`` with ``CLPFT_PAUSE_DIR=FOLDER`` holds the process there instead: it writes
FOLDER/reached and waits until FOLDER/go exists, so that a test can interrupt it (SIGINT) or start a second
process at a known moment rather than after a guessed delay (which a faster machine outruns).

The points sit where a crash is most likely to leave something half-done (a checkpoint half-written, a
model folder being swapped in, a cache between two writes); ``benchmarks/fault_injection.py`` kills a run
at each of them, and at random moments, and checks that ``--resume`` finishes with the same result. Unset,
a point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

ENVIRONMENT_VARIABLE = "CLPFT_KILL_AT"
PAUSE_VARIABLE, PAUSE_DIR_VARIABLE = "CLPFT_PAUSE_AT", "CLPFT_PAUSE_DIR"
PAUSE_LIMIT_SECONDS = 600  # a test that never says go does not leave the process waiting for ever
POINTS = (
    "encode.batch",  # a batch of texts encoded (corpus, queries)
    "mine.searched",  # the corpus ranked for every training query, no negative chosen yet
    "neg_queries.cached",  # one document's generated queries committed to the cache
    "checkpoint.model_written",  # a checkpoint's weights written, its optimizer and trainer state not yet
    "checkpoint.unmarked",  # a checkpoint written, its completion marker not yet
    "checkpoint.rotating",  # an old checkpoint's marker removed, its files not yet
    "model.saving",  # the model written to its temporary folder, not yet renamed into place
    "model.swapping",  # the previous model folder moved aside, the new one not yet in its place
    "evaluate.encoded",  # the corpus and queries encoded for an evaluation, no metric computed yet
    "run.evaluated",  # `clpft run`: the fine-tuned model evaluated, metrics.json not written yet
    "ablation.row_trained",  # `clpft ablation`: a row's model saved, not yet evaluated
)
_hits: Counter[str] = Counter()


def _nth_pass(spec: str, name: str) -> bool:
    """Whether this pass through the point ``name`` is the one ``spec`` (NAME[:N]) asks for."""
    target, _, nth = spec.partition(":")
    return target == name and _hits[name] == int(nth or 1)


def kill_point(name: str) -> None:
    """Passes the point ``name``: killed or held here if the environment asks for it, else nothing."""
    kill, pause = os.environ.get(ENVIRONMENT_VARIABLE), os.environ.get(PAUSE_VARIABLE)
    if not kill and not pause:
        return
    _hits[name] += 1
    if kill and _nth_pass(kill, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if pause and _nth_pass(pause, name):
        folder = Path(os.environ[PAUSE_DIR_VARIABLE])
        (folder / "reached").write_text(f"{os.getpid()} {name}\n", encoding="utf-8")
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
