"""Issue 31's remaining levers, judged on validation only: does any of them beat the default on SciFact's
held-out training queries, and what does each cost?

Every row is `clpft train` with the default preset (3 epochs, the guard, clear-best, merges at the quarters) on
rows mined once by the default's mining (ANCE negatives from the packaged all-MiniLM-L6-v2), with
`--val-fraction 0.2 --val-corpus DATA` (a seeded 20% of the training queries rank the whole training corpus;
the test split is never read), plus the row's own flags. A row may also name its own mining flags (then it
trains on rows mined with them). Reported per row: the guard's start and chosen validation nDCG@10, the
candidate it chose, a paired randomisation test of the chosen model's per-query validation scores against the
default row's (the same queries), the training seconds, steps and the 1-minute load at the row's end (on 2
cores a row that shared the machine is not a time measurement).

    python benchmarks/studies/levers.py --out benchmarks/results/levers   # resumable: finished rows are kept

Levers (issue 31): fewer hard negatives per row with a larger batch (the same texts per step, half or a
quarter of the steps: a lever for the time point too), hardness-weighted InfoNCE (`--hardness-strength`,
EmbeddingGemma's 5), the false-negative margin (`--max-score-ratio 0.95` at mining, sentence-transformers'
relative_margin 0.05).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
from clpft.files import write_json, write_text  # noqa: E402

COMMON = ["--val-fraction", "0.2"]
ROWS = {  # name: (what it tries, mining flags, training flags)
    "default": ("the default preset", [], []),
    "neg1-batch16": (
        "1 hard negative per row, batch 16 (the same 48 texts a step, half the steps)",
        [],
        ["--num-negatives", "1", "--batch-size", "16"],
    ),
    "neg2-batch12": (
        "2 hard negatives per row, batch 12 (48 texts a step, 2/3 of the steps)",
        [],
        ["--num-negatives", "2", "--batch-size", "12"],
    ),
    "hardness5": ("hardness-weighted InfoNCE, strength 5", [], ["--hardness-strength", "5"]),
    "margin0.95": (
        "false-negative margin: no candidate above 0.95 x the best positive's score",
        ["--max-score-ratio", "0.95"],
        [],
    ),
}


def clpft(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from clpft.cli import main; sys.exit(main())", *args]


def mined_file(work: Path, data: Path, flags: list[str]) -> Path:
    name = "mined" + "".join(f"_{f.lstrip('-')}" for f in flags) + ".jsonl"
    path = work / name
    if not path.is_file():
        subprocess.run(clpft("mine", "--data", str(data), "--out", str(path), "--quiet", *flags), check=True)
    return path


def paired_p(a: dict[str, float], b: dict[str, float]) -> float:
    from clpft.evaluation.statistics import paired_randomization_test

    queries = sorted(set(a) & set(b))
    return paired_randomization_test([a[q] for q in queries], [b[q] for q in queries])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "levers"))
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    data, work = Path(args.data).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_suffix(".json")
    report = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": {}}
    for name in args.rows.split(","):
        description, mining, training = ROWS[name]
        model = work / name / "model"
        if not (model / "training.json").is_file():
            train_file = mined_file(work, data, mining)
            command = clpft("train", "--train", str(train_file), "--out", str(model), "--overwrite", "--quiet")
            started = time.perf_counter()
            subprocess.run([*command, "--val-corpus", str(data), *COMMON, *training], check=True)
            write_json(
                work / name / "wall.json",
                {"wall_s": round(time.perf_counter() - started, 1), "load_1min_end": os.getloadavg()[0]},
            )
        record = json.loads((model / "training.json").read_text())
        guard = record["guard"]
        chosen = next(c for c in guard["candidates"] if c["label"] == guard["chosen"])
        wall = json.loads((work / name / "wall.json").read_text()) if (work / name / "wall.json").is_file() else {}
        report["rows"][name] = {
            "description": description,
            "mining_flags": mining,
            "training_flags": [*COMMON, *training],
            "start_score": guard["start_score"],
            "best_step_score": guard["best_score"],
            "chosen": guard["chosen"],
            "chosen_score": chosen["score"],
            "per_query": chosen["per_query"],
            "training_s": record["seconds"],
            "optimizer_steps": record["optimizer_steps"],
            "training_rows": record["examples"],
            # rows a mining left short of --num-negatives are not trained on (the margin's cost)
            "skipped_queries": record["skipped_queries"],
            **wall,
        }
    base = report["rows"].get("default")
    for row in report["rows"].values():
        row["p_vs_default"] = (
            round(paired_p(row["per_query"], base["per_query"]), 4) if base and row is not base else None
        )
    write_json(json_path, report)
    held_out = len(base["per_query"]) if base else "the"
    lines = [
        "# Issue 31's levers on SciFact's validation split (the test split is not read)",
        "",
        "`python benchmarks/studies/levers.py --out benchmarks/results/levers`; every row is the default preset "
        "with `--val-fraction 0.2 --val-corpus DATA` plus its flags; scores are validation nDCG@10 of "
        f"{held_out} held-out training queries ranking the whole training corpus; p: paired randomisation test "
        "against the default row.",
        "",
        "| row | what it tries | rows trained (skipped) | start | chosen | chosen score | p vs default | steps | "
        "training s | load at end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        lines.append(
            f"| {name} | {row['description']} | {row['training_rows']} ({row['skipped_queries']}) | "
            f"{row['start_score']:.4f} | {row['chosen']} | "
            f"{row['chosen_score']:.4f} | "
            f"{row['p_vs_default'] if row['p_vs_default'] is not None else '-'} | {row['optimizer_steps']} | "
            f"{row['training_s']:.0f} | {round(row['load_1min_end'], 2) if 'load_1min_end' in row else '-'} |"
        )
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
