"""The README's main job as a benchmark: `clpft run` with all defaults on a dataset, timed.

    python benchmarks/main_job.py --data ../shared/data/scifact --out runs/scifact
    python benchmarks/main_job.py --from-run runs/scifact      # summarise a run already done

Writes benchmarks/results/main_job_<dataset>.json and .md: the before/after table, wall time,
time per stage, peak memory (max RSS of the run's process) and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from clpft.evaluation.metrics import LABELS

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "platform": platform.platform()}


def summarise(run_dir: Path, command: str) -> dict:
    report = json.loads((run_dir / "metrics.json").read_text())
    return {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "data": report["data"],
        "model": report["model"],
        "eval_split": report["eval_split"],
        "base": report["base"]["metrics"],
        "finetuned": report["finetuned"]["metrics"],
        "seconds": report["seconds"],
        "peak_rss_mb": report["peak_rss_mb"],
        "mining": report["mining"],
        "trainable_parameters": report["training"]["trainable_parameters"],
        "total_parameters": report["training"]["total_parameters"],
        "optimizer_steps": report["training"]["optimizer_steps"],
        "machine": machine(),
    }


def markdown(result: dict) -> str:
    name = Path(result["data"]).name
    lines = [
        f"# Main job on {name} ({result['date']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: {result['model']}; evaluated on the `{result['eval_split']}` split.  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['machine']['memory_gib']} GiB.",
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        b, f = result["base"][key], result["finetuned"][key]
        lines.append(f"| {label} | {b:.4f} | {f:.4f} | {f - b:+.4f} |")
    s = result["seconds"]
    lines += [
        "",
        f"Wall time {s['total'] / 60:.1f} min (corpus encoding {s['corpus_encoding']:.0f} s, mining {s['mining']:.0f} s, "
        f"training {s['training']:.0f} s for {result['optimizer_steps']} optimizer steps, fine-tuned evaluation "
        f"{s['evaluation_finetuned']:.0f} s); peak memory {result['peak_rss_mb']:.0f} MB.  ",
        f"Trainable parameters {result['trainable_parameters']:,} of {result['total_parameters']:,}.  ",
        f"Mining: {result['mining']['negatives']} negatives for {result['mining']['queries']} queries, "
        f"{result['mining']['negatives_with_queries']} ({100 * result['mining']['share_with_queries']:.1f}%) with "
        "at least one query of their own from the training qrels.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--out", default="runs/scifact")
    parser.add_argument("--from-run", default=None, help="summarise this finished run folder instead of running")
    args, extra = parser.parse_known_args()
    if args.from_run:
        run_dir = Path(args.from_run)
        command = f"clpft run --data {json.loads((run_dir / 'metrics.json').read_text())['data']} --out {run_dir}"
    else:
        run_dir = Path(args.out)
        cmd = ["clpft", "run", "--data", args.data, "--out", args.out, *extra]
        command = " ".join(cmd)
        subprocess.run([sys.executable, "-m", "clpft.cli", *cmd[1:]], check=True)
    result = summarise(run_dir, command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"main_job_{Path(result['data']).name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
