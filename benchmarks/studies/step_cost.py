"""What one optimizer step of the default costs on the real rows of a quality run, against its variants.

The quality rows measured the default's SciFact training at 10.4-13.0 s a step, where speed.py's synthetic
rows give 7.0 s and the recipe's own SciFact row 6.0 s. This study times `clpft train` on a real mined
training file (the default row's train.jsonl) for each variant, twice: with ``--max-steps A`` and ``B``; the
difference over ``B - A`` steps is the cost of a step without the loading, set-up and saving both runs share.
A variant is ``label=flags`` (flags added to `clpft train`), or ``label@TREE=flags`` to run another checkout's
code (``TREE/src``), e.g. the commit whose SciFact row trained at 6.9 s a step. `st-recipe` times
sentence-transformers' recipe the same way (benchmarks/st_recipe.py, its own mined rows; its recipe.json
gives training seconds without its mining). Each run records the 1-minute load at its start and end: on
2 cores another process's threads slow a step several-fold, so a row whose load is above ~2.5 is not a
measurement of the code. Finished runs are cached in the JSON (rerun with a variant's label removed from it).

    python benchmarks/studies/step_cost.py --train runs/quality/rows/scifact/default/run/train.jsonl \\
        --variant default= --variant "no-gradcache=--gradcache-mini-batch 0" --variant "moe-none=--moe none" \\
        --variant st-recipe= --out benchmarks/results/step_cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
from clpft.files import write_json, write_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def run_once(label: str, tree: Path, flags: list[str], train: Path, dataset: str, steps: int) -> dict:
    """One timed run of ``steps`` optimizer steps: its training seconds (as the tool records them)."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clpft-step-cost-") as scratch:
        out = Path(scratch) / "model"
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        if label == "st-recipe":
            command = [sys.executable, str(tree / "benchmarks" / "st_recipe.py"), "--data", str(DATA / dataset)]
            command += ["--out", str(out), "--max-steps", str(steps), *flags]
        else:
            cli = "import sys; from clpft.cli import main; sys.exit(main())"
            command = [sys.executable, "-c", cli, "train", "--train", str(train), "--out", str(out)]
            command += ["--max-steps", str(steps), "--val-fraction", "0", "--quiet", *flags]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{label} ({steps} steps) failed:\n{done.stderr[-2000:]}")
        if label == "st-recipe":
            record = json.loads((out / "recipe.json").read_text())
            seconds, taken = record["training_seconds"], record["optimizer_steps"]
        else:
            record = json.loads((out / "training.json").read_text())
            seconds, taken = record["seconds"], record["optimizer_steps"]
    return {
        "steps": taken,
        "training_s": round(seconds, 2),
        "wall_s": round(wall, 1),
        "load_1min_start": round(load_before, 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
    }


def commit(tree: Path) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=tree, capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_variant(spec: str) -> tuple[str, Path, list[str]]:
    name, _, flags = spec.partition("=")
    label, _, tree = name.partition("@")
    return label, Path(tree).resolve() if tree else ROOT, shlex.split(flags)


def markdown(report: dict) -> str:
    lines = [
        "# The cost of one optimizer step on real training rows",
        "",
        f"{report['machine']}; training file `{report['train']}`; each variant ran `--max-steps "
        f"{report['steps'][0]}` and `{report['steps'][1]}`: seconds per step = the difference in training "
        "seconds over the difference in steps (loading, set-up and saving cancel). `st-recipe` trains on the rows "
        "its own mining gives (`benchmarks/st_recipe.py`: the same queries, 4 negatives each, no own queries) and "
        "computes in fp32 with plain MultipleNegativesRankingLoss.",
        "",
        "| variant | code | flags | s/step | training s (A / B) | 1-min load (start-end) |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in report["variants"].items():
        short, long_ = row["runs"]
        loads = (
            f"{short['load_1min_start']}-{short['load_1min_end']} / {long_['load_1min_start']}-{long_['load_1min_end']}"
        )
        lines.append(
            f"| {label} | {row['commit']} | `{' '.join(row['flags']) or '(defaults)'}` | "
            f"{row['seconds_per_step']:.2f} | "
            f"{short['training_s']} / {long_['training_s']} | {loads} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=Path, help="a mined training file (train.jsonl)")
    parser.add_argument("--dataset", default="scifact", help="the dataset st-recipe mines from (../shared/data)")
    parser.add_argument("--variant", action="append", required=True, help="label[@TREE]=flags")
    parser.add_argument("--steps", default="3,11", help="A,B: the two step counts")
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    json_path = args.out.with_suffix(".json")
    report = json.loads(json_path.read_text()) if json_path.is_file() else {"variants": {}}
    report.update(
        machine=f"{cpu_model()}, {os.cpu_count()} cores",
        train=str(args.train),
        steps=steps,
    )
    for spec in args.variant:
        label, tree, flags = parse_variant(spec)
        cached = report["variants"].get(label)
        if cached and cached["flags"] == flags and cached["steps"] == steps and cached["commit"] == commit(tree):
            continue
        runs = [run_once(label, tree, flags, args.train.resolve(), args.dataset, n) for n in steps]
        per_step = (runs[1]["training_s"] - runs[0]["training_s"]) / (runs[1]["steps"] - runs[0]["steps"])
        report["variants"][label] = {
            "commit": commit(tree),
            "flags": flags,
            "steps": steps,
            "runs": runs,
            "seconds_per_step": round(per_step, 3),
        }
        print(f"{label}: {per_step:.2f} s/step", flush=True)
        write_json(json_path, report)
        write_text(args.out.with_suffix(".md"), markdown(report))


if __name__ == "__main__":
    main()
