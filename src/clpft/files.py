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
        read_only = hasattr(os, "statvfs") and os.statvfs(parent).f_flag & getattr(os, "ST_RDONLY", 1)
        raise ClpftError(f"cannot write to {parent}: {'read-only file system' if read_only else 'permission denied'}")


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
        _usual_permissions(tmp)
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


def _usual_permissions(folder: Path) -> None:
    """Every file and folder under ``folder`` readable as the umask allows: libraries that write through
    mkstemp (safetensors) leave 0600 files in a folder whose other files are 0644."""
    mask = _umask()
    for entry in folder.rglob("*"):
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove what a crash left of this module's atomic writes in ``folder``: ``.NAME.*.tmp`` files and
    folders, and ``.NAME.old`` folders (a replaced folder moved aside), for the output ``name`` only (every
    output's when None: a run folder holds only its own). Returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for entry in root.iterdir():
        entry_name = entry.name
        mine = name is None or entry_name == f".{name}.old" or entry_name.startswith(f".{name}.")
        if mine and entry_name.startswith(".") and (entry_name.endswith(".tmp") or entry_name.endswith(".old")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``path`` while a command writes it: a second process that would write the
    same output is refused in one line naming the holder. A lock whose process is gone (killed) is stale and
    taken over. Under torchrun only the first process (RANK 0) writes, so only it locks."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = Path(path)
    _check_parent(path)
    lock = path.with_name(f".{path.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            just_made = holder is None and _age(lock) < 5.0  # its maker has not written its pid yet
            if just_made or (holder is not None and _alive(holder)):
                raise ClpftError(
                    f"{path} is being written by process {holder or '(starting)'} (lock {lock}); wait for it to "
                    "finish or stop it"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:  # pragma: no cover - another process took the stale lock between our two tries
        raise ClpftError(f"{path} is being written by another process (lock {lock})")
    with os.fdopen(fd, "w") as file:
        file.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if _lock_holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _age(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
