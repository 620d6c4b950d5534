"""Training checkpoints that a crash cannot make unusable.

transformers' trainer writes a checkpoint file by file into ``checkpoint-N/`` (weights, optimizer,
scheduler, RNG state, trainer state last), and its ``get_last_checkpoint`` takes the folder with the
highest N: a process killed while writing leaves a folder that looks newest and cannot be loaded. clpft
adds a completion marker, written (atomically) only after every file is on disk and listing each file's
size; a checkpoint counts only when its marker is there and every listed file has its size. Old
checkpoints are removed marker first, so a removal cut short leaves an incomplete checkpoint, never one
that looks complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from clpft.faults import kill_point
from clpft.files import write_json

MARKER = "clpft_checkpoint_complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: str | Path) -> None:
    folder = Path(checkpoint)
    sizes = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    write_json(folder / MARKER, {"files": sizes})


def incomplete_reason(checkpoint: str | Path) -> str | None:
    """None for a complete checkpoint, else why it is not one."""
    folder = Path(checkpoint)
    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return "no completion marker (the run stopped while writing it)"
    except (OSError, ValueError, KeyError, TypeError):
        return "its completion marker is unreadable"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} of {size} bytes"
    return None


def checkpoints_by_step(folder: str | Path) -> list[tuple[int, Path]]:
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(folder: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint in ``folder`` (None if there is none) and the newer incomplete ones
    passed over, each with the reason."""
    skipped = []
    for _, path in reversed(checkpoints_by_step(folder)):
        reason = incomplete_reason(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def remove_checkpoint(path: str | Path) -> None:
    """Marker first: a removal cut short leaves an incomplete checkpoint, not a complete-looking one."""
    path = Path(path)
    (path / MARKER).unlink(missing_ok=True)
    kill_point("checkpoint.rotating")
    shutil.rmtree(path, ignore_errors=True)


def rotate(folder: str | Path, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints; remove older ones and incomplete ones older than
    the newest complete checkpoint (an incomplete one can only be a crash's leftover there)."""
    complete = [(step, path) for step, path in checkpoints_by_step(folder) if incomplete_reason(path) is None]
    if not complete:
        return
    kept = {path for _, path in complete[-keep:]}
    newest = complete[-1][0]
    for step, path in checkpoints_by_step(folder):
        if path not in kept and step < newest:
            remove_checkpoint(path)


def remove_all(folder: str | Path) -> None:
    """Remove a checkpoint folder once the finished model replaces it: every marker first."""
    root = Path(folder)
    for _, path in checkpoints_by_step(root):
        remove_checkpoint(path)
    shutil.rmtree(root, ignore_errors=True)
