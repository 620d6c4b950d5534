"""The README's main job as a benchmark: `clpft run` with all defaults on a dataset, timed.

    python benchmarks/main_job.py --data ../shared/data/scifact --out runs/scifact
    python benchmarks/main_job.py --from-run runs/scifact      # summarise a run already done
    python benchmarks/main_job.py --from-run runs/scifact --compare st-mnrl=runs/scifact-mnrl/metrics.json

Writes benchmarks/results/main_job_<dataset>[_<tag>].json and .md: the before/after table, wall time,
time per stage, peak memory (max RSS of the run's process) and the machine. Each `--compare NAME=FILE`
(a `clpft eval` or `clpft run` metrics.json on the same split: another model trained on the same budget)
adds a row to a comparison table, with a paired randomisation test over per-query nDCG@10 against the
run's fine-tuned model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from clpft.evaluation.metrics import LABELS
from clpft.evaluation.statistics import paired_randomization_test
from clpft.files import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"main_job: error: {path}: {error}") from None


def _scores(part: dict, path: Path) -> tuple[dict, dict[str, float]]:
    """(metrics, per-query nDCG@10) of one evaluated model in a metrics.json."""
    if "metrics" not in part or "per_query" not in part:
        raise SystemExit(f"main_job: error: {path}: not a clpft eval / run metrics.json (no metrics and per_query)")
    return part["metrics"], {q: v["ndcg@10"] for q, v in part["per_query"].items()}


def evaluated(path: Path) -> tuple[dict, dict[str, float]]:
    """(metrics, per-query nDCG@10) of a `clpft eval` output, or of the fine-tuned model of a `clpft run`."""
    report = _read_json(path)
    return _scores(report.get("finetuned", report), path)


def compare(run_dir: Path, others: list[str], report: dict | None = None) -> list[dict]:
    """The run's base and fine-tuned model, then every other model, each tested against the fine-tuned one."""
    path = run_dir / "metrics.json"
    report = report if report is not None else _read_json(path)
    (base_metrics, base), (metrics, mine) = _scores(report["base"], path), _scores(report["finetuned"], path)
    rows = [
        {"name": "base (untrained)", "metrics": base_metrics, "per_query": base},
        {"name": "this run", "metrics": metrics, "per_query": mine},
    ]
    for spec in others:
        name, sep, file = spec.partition("=")
        if not sep:
            raise SystemExit(f"main_job: error: --compare {spec!r}: expected NAME=FILE")
        metrics, per_query = evaluated(Path(file))
        if set(per_query) != set(mine):
            raise SystemExit(f"main_job: error: {file}: evaluated on other queries than {path}")
        rows.append({"name": name, "file": file, "metrics": metrics, "per_query": per_query})
    queries = sorted(mine)
    for row in rows:
        row["p_vs_this_run"] = (
            None
            if row["name"] == "this run"
            else paired_randomization_test([row["per_query"][q] for q in queries], [mine[q] for q in queries])
        )
    return [{k: v for k, v in row.items() if k != "per_query"} for row in rows]


def summarise(report: dict, command: str) -> dict:
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
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB.",
        "",
        "| metric | base | fine-tuned | delta |",
        "|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        b, f = result["base"][key], result["finetuned"][key]
        lines.append(f"| {label} | {b:.4f} | {f:.4f} | {f - b:+.4f} |")
    if result.get("comparison"):
        lines += [
            "",
            "Compared on the same split (p: two-sided paired randomisation test over per-query nDCG@10 "
            "against this run's fine-tuned model, 10,000 sign flips):",
            "",
            "| model | " + " | ".join(LABELS.values()) + " | p vs this run |",
            "|---|" + "---|" * (len(LABELS) + 1),
        ]
        for row in result["comparison"]:
            p = "-" if row["p_vs_this_run"] is None else f"{row['p_vs_this_run']:.4f}"
            lines.append(f"| {row['name']} | " + " | ".join(f"{row['metrics'][k]:.4f}" for k in LABELS) + f" | {p} |")
    s = result["seconds"]
    lines += [
        "",
        f"Wall time {s['total'] / 60:.1f} min (corpus encoding {s['corpus_encoding']:.0f} s, "
        f"mining {s['mining']:.0f} s, "
        f"training {s['training']:.0f} s for {result['optimizer_steps']} optimizer steps, fine-tuned evaluation "
        f"{s['evaluation_finetuned']:.0f} s); peak memory {result['peak_rss_mb']:.0f} MB.  ",
        f"Trainable parameters {result['trainable_parameters']:,} of {result['total_parameters']:,}.  ",
        f"Mining: {result['mining']['negatives']} negatives for {result['mining']['queries']} queries, "
        f"{result['mining']['negatives_with_queries']} ({100 * result['mining']['share_with_queries']:.1f}%) with "
        "at least one query of their own from the training qrels.",
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    if result.get("generated_by"):
        lines += [f"Generated by `{result['generated_by']}`.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--out", default="runs/scifact")
    parser.add_argument("--from-run", default=None, help="summarise this finished run folder instead of running")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="another model's metrics.json on the same split, to compare with (repeatable)",
    )
    parser.add_argument("--tag", default="", help="results go to main_job_<dataset>_<tag>.{json,md}")
    parser.add_argument("--note", default="", help="a line of notes for the markdown (how the run shared the machine)")
    args, extra = parser.parse_known_args()
    if args.from_run:
        run_dir = Path(args.from_run)
        report = _read_json(run_dir / "metrics.json")
        manifest = run_dir / "manifest.json"  # holds the command line as given
        command = (
            "clpft " + _read_json(manifest)["command"].split(" ", 1)[1]
            if manifest.is_file()
            else f"clpft run --data {report['data']} --out {run_dir}"
        )
        if "preset" not in report["train_config"]:  # a run from before presets existed: the paper's settings
            command += " --preset paper"
    else:
        run_dir = Path(args.out)
        cmd = ["clpft", "run", "--data", args.data, "--out", args.out, *extra]
        command = " ".join(cmd)
        if subprocess.run([sys.executable, "-m", "clpft.cli", *cmd[1:]]).returncode != 0:
            raise SystemExit("main_job: error: clpft run failed (its message is above)")
        report = _read_json(run_dir / "metrics.json")
    result = summarise(report, command)
    result["comparison"] = compare(run_dir, args.compare, report) if args.compare else []
    result["note"] = args.note
    argv = sys.argv[1:]  # the note is in the file already: stand it in by NOTE
    argv = [("NOTE" if i and argv[i - 1] == "--note" else a) for i, a in enumerate(argv)]
    result["generated_by"] = "python benchmarks/main_job.py " + shlex.join(argv)
    stem = RESULTS / f"main_job_{Path(result['data']).name}{'_' + args.tag if args.tag else ''}"
    write_json(stem.with_suffix(".json"), result)  # clpft's writers: temp file, then rename
    write_text(stem.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
