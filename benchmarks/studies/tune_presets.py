"""Tune clpft's training settings on a validation split carved from the *training* queries.

    python benchmarks/studies/tune_presets.py --data ../shared/data/scifact --out runs/tune-scifact
    python benchmarks/studies/tune_presets.py collect runs/tune-scifact runs/tune-xquad-hi
    # -> benchmarks/results/tuning.md

1. Mines a tuning set from the training split (`clpft mine`, ANCE negatives from the base model).
2. Every run of the grid is one `clpft train --val-fraction F`: the same seeded share of the tuning
   queries is held out, the model trains on the rest, and sentence-transformers'
   InformationRetrievalEvaluator scores the held-out queries (their positives and mined negatives) at
   the end. A run with lr 0 gives the base model's score through the same path.
3. Writes OUT/tuning.json and OUT/tuning.md: every run's validation nDCG@10 / MRR@10, seconds, and the
   whole tuning budget (runs, training examples, wall time). The test split is never read.

A run is ROW:key=value,... where ROW is a ladder row (`clpft ablation`'s names: it sets --loss, --moe and
--train-only) and the keys are `clpft train` flags without dashes. Settings not given are the paper's
(`--preset paper`), so each run differs from the paper's row only in what it names. Finished runs are
kept in tuning.json and skipped when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clpft.ablation import ROWS
from clpft.files import write_json, write_text

# The default grid: the paper's settings, then learning rate and temperature around them, for the row
# that trains only the MoE layers, the row that trains every weight, and the standard it must beat.
HERE = Path(__file__).resolve().parents[1]  # benchmarks/
DEFAULT_GRID = [
    "base:lr=0",
    *[f"ance-clp-moe:lr={lr}" for lr in ("1e-5", "1e-4", "3e-4", "1e-3")],
    "ance-clp-moe:lr=3e-4,temperature=0.05",
    *[f"ance-clp:lr={lr}" for lr in ("1e-5", "3e-5", "1e-4")],
    *[f"st-mnrl:lr={lr}" for lr in ("1e-5", "3e-5", "1e-4")],
]


def parse_run(spec: str) -> tuple[str, dict[str, str]]:
    row, _, rest = spec.partition(":")
    if row != "base" and row not in ROWS:
        raise SystemExit(f"tune_presets: unknown row {row!r} in {spec!r} (choose from {', '.join(ROWS)})")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    return row, settings


def train_flags(row: str, settings: dict[str, str]) -> list[str]:
    if row == "base":  # lr 0: the untouched model, scored by the same evaluator
        flags = ["--loss", "infonce", "--moe", "none", "--train-only", "all"]
    else:
        spec = ROWS[row]
        flags = ["--loss", spec.loss, "--moe", spec.moe, "--train-only", spec.train_only]
    for key, value in settings.items():
        flags += [f"--{key.replace('_', '-')}", value]
    return flags


def _run(command: list[str], **kwargs) -> None:
    """A `clpft` step; when it fails, its own one-line error (on stderr) is followed by one line here."""
    if subprocess.run(command, **kwargs).returncode != 0:
        raise SystemExit(f"tune_presets: error: `clpft {command[3]}` failed (its message is above)")


def main() -> None:
    if sys.argv[1:2] == ["collect"]:
        collect(sys.argv[2:], HERE / "results" / "tuning.md")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="BEIR-layout dataset folder (only its training split is read)")
    parser.add_argument("--out", required=True, help="folder for the tuning set, runs and tuning.json/.md")
    parser.add_argument("--split", default="train", help="qrels split with the training queries")
    parser.add_argument("--max-train-queries", type=int, default=200, help="training queries mined for tuning")
    parser.add_argument("--val-fraction", type=float, default=0.5, help="share of them held out for validation")
    parser.add_argument("--epochs", default="1", help="training epochs per run")
    parser.add_argument("--passage-max-tokens", default="128", help="passage length limit (mining and training)")
    parser.add_argument(
        "--val-corpus",
        action="store_true",
        help="validation queries rank the whole corpus (as the test does), not the pool of their "
        "positives and mined negatives",
    )
    parser.add_argument("--model", default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument(
        "--neg-queries",
        default="qrels",
        help="where the mined negatives' own queries come from (`clpft mine --neg-queries`)",
    )
    parser.add_argument("--seed", default="42")
    parser.add_argument(
        "--run",
        action="append",
        default=None,
        metavar="ROW:key=value,...",
        help="a run of the grid (repeatable; default: the built-in grid)",
    )
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ["--model", args.model] if args.model else []
    clpft = [sys.executable, "-m", "clpft.cli"]
    common = ["--passage-max-tokens", args.passage_max_tokens, "--seed", args.seed]
    tuning_set = out / "tune.jsonl"
    if not tuning_set.is_file():
        _run(
            [
                *clpft,
                "mine",
                "--data",
                args.data,
                "--split",
                args.split,
                "--out",
                str(tuning_set),
                "--max-train-queries",
                str(args.max_train_queries),
                "--neg-queries",
                args.neg_queries,
                "--quiet",
                *model,
                *common,
            ]
        )

    results_file = out / "tuning.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": []}
    done = {r["run"] for r in results["runs"]}
    for spec in args.run or DEFAULT_GRID:
        if spec in done:
            continue
        row, settings = parse_run(spec)
        folder = out / "runs" / spec.replace(":", "_").replace(",", "_").replace("=", "-")
        started = time.perf_counter()
        _run(
            [
                *clpft,
                "train",
                "--train",
                str(tuning_set),
                "--out",
                str(folder),
                "--overwrite",
                "--quiet",
                "--preset",
                "paper",
                *train_flags(row, settings),
                "--epochs",
                args.epochs,
                "--val-fraction",
                str(args.val_fraction),
                "--eval-steps",
                "100000",
                *model,
                *common,
                *(["--val-corpus", args.data] if args.val_corpus else []),
            ],
            stdout=subprocess.DEVNULL,
        )
        training = json.loads((folder / "training.json").read_text())
        final = training["val_history"][-1]
        results["runs"].append(
            {
                "run": spec,
                "row": row,
                "settings": settings,
                "val_ndcg@10": final["ndcg@10"],
                "val_mrr@10": final.get("mrr@10"),
                "train_examples": training["examples"],
                "val_queries": training["val_queries"],
                "optimizer_steps": training["optimizer_steps"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        shutil.rmtree(folder)  # the scores are what tuning needs; the weights are 90 MB a run
        results.update(
            data=args.data,
            val_fraction=args.val_fraction,
            val_corpus="whole corpus" if args.val_corpus else "pool",
            epochs=args.epochs,
            max_train_queries=args.max_train_queries,
            passage_max_tokens=args.passage_max_tokens,
            neg_queries=args.neg_queries,
        )
        write_json(results_file, results)
        print(f"{spec}: val nDCG@10 {final['ndcg@10']:.4f} ({results['runs'][-1]['seconds']:.0f} s)", flush=True)
    write_text(out / "tuning.md", markdown(results))
    print(markdown(results))


def collect(folders: list[str], out: Path) -> None:
    """benchmarks/results/tuning.md (+ .json) from finished tuning folders: the command, the table, the budget."""
    sections, everything = [], {}
    for folder in folders:
        results = json.loads((Path(folder) / "tuning.json").read_text())
        runs = " ".join(f"--run {r['run']}" for r in results["runs"])
        source = results.get("neg_queries", "qrels")
        neg_queries_flag = f"--neg-queries {source} " if source != "qrels" else ""
        command = (
            f"python benchmarks/studies/tune_presets.py --data {results['data']} --out {folder} --max-train-queries "
            f"{results['max_train_queries']} --val-fraction {results['val_fraction']} --epochs {results['epochs']} "
            f"{'--val-corpus ' if results.get('val_corpus') == 'whole corpus' else ''}"
            f"{neg_queries_flag}"
            f"--passage-max-tokens {results['passage_max_tokens']} {runs}"
        )
        whole = results.get("val_corpus") == "whole corpus"
        source = results.get("neg_queries", "qrels")
        sections += [
            f"## {Path(results['data']).name}{', validation on the whole corpus' if whole else ''}"
            f"{f', own queries of negatives: {source}' if source != 'qrels' else ''}",
            "",
            f"`{command}`",
            "",
            markdown(results),
        ]
        everything[str(folder)] = results
    notes = Path(__file__).resolve().parent / "tuning_notes.md"
    text = "# Tuning clpft's defaults on validation splits\n\n" + (notes.read_text() + "\n" if notes.is_file() else "")
    write_text(out, text + "\n".join(sections))
    write_json(out.with_suffix(".json"), everything)


def markdown(results: dict) -> str:
    runs = results["runs"]
    seconds = sum(r["seconds"] for r in runs)
    examples = sum(r["train_examples"] * float(results["epochs"]) for r in runs if r["row"] != "base")
    pool = results.get("val_corpus", "pool")
    ranked = pool + (" (their positives and mined negatives)" if pool == "pool" else "")
    lines = [
        f"Tuning on {results['data']}: {runs[0]['train_examples'] if runs else 0} training queries, "
        f"{runs[0]['val_queries'] if runs else 0} held-out validation queries "
        f"(--val-fraction {results['val_fraction']}) ranking {ranked}, "
        f"{results['epochs']} epoch(s), passages cut at {results['passage_max_tokens']} tokens, "
        f"negatives' own queries from {results.get('neg_queries', 'qrels')}. "
        f"Budget: {len(runs)} runs, {examples:.0f} training examples, {seconds / 60:.1f} min.",
        "",
        "| run | val nDCG@10 | val MRR@10 | steps | s |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["row"], -r["val_ndcg@10"])):
        lines.append(
            f"| {r['run']} | {r['val_ndcg@10']:.4f} | {(r['val_mrr@10'] or 0):.4f} | {r['optimizer_steps']} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
