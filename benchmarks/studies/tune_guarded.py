"""Round 5 of the tuning (the quality issue): what trains, at batch 8, under the guard, on SciFact's validation
split only (a seeded 20% of the training queries; the test split is never read).

    python benchmarks/studies/tune_guarded.py                 # mines once, trains each row (cached), writes the table

Every row is `clpft train` on the same mined file (ANCE negatives from the packaged all-MiniLM-L6-v2, seed 42)
with `--val-fraction 0.2 --val-corpus ../shared/data/scifact --merge auto --batch-size 8 --grad-accum 1` and
1 epoch (81 optimizer steps over 647 training queries; the 162 held-out queries rank a 2,000-document sample of
the corpus that holds all their positives and mined negatives), plus the row's own flags. Rows are cached in
WORK/NAME (runs/tune by default): a row whose model folder has training.json is not trained again.
Writes benchmarks/results/tuning_guarded.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # benchmarks/
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COMMON = ["--val-fraction", "0.2", "--merge", "auto", "--batch-size", "8", "--grad-accum", "1", "--epochs", "1"]
ROWS = {
    "A2_all_lr2e-5": (
        "every weight beside the MoE layers, lr 2e-5, tau 0.05",
        ["--train-only", "all", "--lr", "2e-5", "--temperature", "0.05"],
    ),
    "B2_moe_lr1e-4": (
        "only the MoE layers, lr 1e-4, tau 0.02 (the earlier default, at batch 8)",
        ["--train-only", "moe", "--lr", "1e-4", "--temperature", "0.02"],
    ),
}


def clpft(*args: str) -> list[str]:
    return [sys.executable, "-m", "clpft.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "tune"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mined = work / "scifact.jsonl"
    if not mined.is_file():
        subprocess.run(clpft("mine", "--data", str(DATA), "--out", str(mined), "--quiet"), check=True)
    rows = {}
    for name, (description, flags) in ROWS.items():
        model = work / name / "model"
        if not (model / "training.json").is_file():
            command = clpft("train", "--train", str(mined), "--out", str(model), "--overwrite", "--quiet")
            subprocess.run([*command, "--val-corpus", str(DATA), *COMMON, *flags], check=True)
        training = json.loads((model / "training.json").read_text())
        guard = training["guard"]
        rows[name] = {
            "description": description,
            "flags": " ".join(flags),
            "steps": training["optimizer_steps"],
            "seconds": training["seconds"],
            "val_history": [(h["step"], h["ndcg@10"]) for h in training["val_history"]],
            **{k: guard.get(k) for k in ("start_score", "best_step", "best_score", "merge_scores", "chosen")},
            "final_score": guard.get("final_score"),
        }
    out = HERE / "results" / "tuning_guarded"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Tuning round 5: what trains, at batch 8, under the guard (SciFact validation split)",
        "",
        "`python benchmarks/studies/tune_guarded.py`. Flags common to every row: `"
        + " ".join(COMMON)
        + "`; 162 held-out "
        "training queries rank 2,000 documents (their positives and mined negatives, then a seeded sample). "
        "Scores are validation nDCG@10; the test split was not read.",
        "",
        "| row | flags | step 0 | best step (score) | merge 0.25 / 0.5 / 0.75 | saved (one-SE rule) | saved score |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        merges = " / ".join(f"{r['merge_scores'].get(a, float('nan')):.4f}" for a in ("0.25", "0.5", "0.75"))
        lines.append(
            f"| {r['description']} | `{r['flags']}` | {r['start_score']:.4f} "
            f"| {r['best_step']} ({r['best_score']:.4f}) | {merges} | {r['chosen']} | {r['final_score']:.4f} |"
        )
    full, moe = rows["A2_all_lr2e-5"], rows["B2_moe_lr1e-4"]
    lines += [
        "",
        f"Saved: {full['chosen']} ({full['final_score']:.4f}) against {moe['chosen']} ({moe['final_score']:.4f}); the "
        f"fully tuned states: {full['best_score']:.4f} against {moe['best_score']:.4f}. The default (`--preset clpft`) "
        "trains every weight: the better tuned state, which the merge then brings back toward the start. Both rows "
        "ran while the test suite shared the machine: their seconds are no speed measurement (benchmarks/speed.py is).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
