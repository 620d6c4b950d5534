"""Kill points for fault-injection tests: ``CLPFT_KILL_AT=NAME[:N]`` ends the process with SIGKILL the N-th
time (default: the first) it passes the point NAME, as a crash or ``kill -9`` would at that moment.

The points sit where a crash is most likely to leave something half-done (a checkpoint half-written, a
model folder being swapped in, a cache between two writes); ``benchmarks/fault_injection.py`` kills a run
at each of them, and at random moments, and checks that ``--resume`` finishes with the same result. Unset,
a point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENVIRONMENT_VARIABLE = "CLPFT_KILL_AT"
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


def kill_point(name: str) -> None:
    spec = os.environ.get(ENVIRONMENT_VARIABLE)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
