"""Atomic file and folder writes: a crash never leaves a half-written output that looks valid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clpft.errors import ClpftError
from clpft.faults import kill_point


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ClpftError(f"cannot create folder {parent}: {error.strerror}") from error
    if not os.access(parent, os.W_OK):
        raise ClpftError(f"cannot write to {parent}: permission denied")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ClpftError(f"{path} already exists (pass --overwrite to replace it)")
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        raise ClpftError(f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any, overwrite: bool = True) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", overwrite=overwrite)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ClpftError(f"{path} already exists and is not empty (pass --overwrite to replace it)")
    _check_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            kill_point("model.swapping")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ClpftError(f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Remove what a crash left of this module's atomic writes in ``folder``: ``.NAME.*.tmp`` files and
    folders, and ``.NAME.old`` folders (a replaced folder moved aside), for names starting with ``prefix``.
    Returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for entry in root.iterdir():
        name = entry.name
        if name.startswith(f".{prefix}") and (name.endswith(".tmp") or name.endswith(".old")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
