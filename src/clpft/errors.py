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


# Where API keys come from (the LLM backend reads them); anything printed or written is scrubbed of them.
SECRET_ENV = ("CLPFT_API_KEY", "OPENAI_API_KEY")


def redact_secrets(text: str) -> str:
    """``text`` with every API key found in the environment replaced by ``***``."""
    import os

    for name in SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:  # a 1-3 character "key" would blank out ordinary words
            text = text.replace(secret, "***")
    return text
