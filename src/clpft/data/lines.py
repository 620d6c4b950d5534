"""Line-exact reading of text files: every problem names the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clpft.errors import DataError


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each non-blank line; UTF-8 (a leading BOM is allowed), any line ending."""
    if not path.is_file():
        raise DataError(path, None, "file not found")
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error.strerror}") from error
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(path, number, f"not valid UTF-8 (byte {error.start + 1})") from error
            text = text.rstrip("\r\n")
            if text.strip():
                yield number, text


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each line of a JSON Lines file."""
    for number, text in read_lines(path):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(path, number, f"malformed JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(value, dict):
            raise DataError(path, number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def string_field(path: Path, number: int, obj: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    """``obj[key]`` as a string (ids may be written as numbers), or a DataError naming the line."""
    if key not in obj or obj[key] is None:
        raise DataError(path, number, f"missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, number, f"field {key!r} must be a string, got {type(value).__name__}")
    value = str(value)
    if not allow_empty and not value.strip():
        raise DataError(path, number, f"field {key!r} is empty")
    return value
