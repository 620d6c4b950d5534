"""manifest.json: what a run folder needs to be understood and reproduced later."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from clpft.errors import redact_secrets

PACKAGES = ("clpft", "torch", "transformers", "sentence-transformers", "faiss-cpu", "pytrec-eval-terrier")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def build_manifest(config: dict[str, Any], data_files: list[Path], seed: int) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    manifest = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": config,
        "seed": seed,
        "versions": versions,
        "git_commit": _git_commit(),
        "data": {str(p): sha256_of(p) for p in data_files if p.is_file()},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    # An API key can reach the command line or the config (e.g. inside an endpoint URL): scrub it.
    return json.loads(redact_secrets(json.dumps(manifest)))
