"""The one exception type that the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations


class ClpftError(Exception):
    """A user-facing problem (bad input file, bad option, output in the way): one clear line."""


class DataError(ClpftError):
    """Bad input data, located as ``file:line: problem``."""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
