"""How many held-out validation queries reached training through the negatives' own queries, before the fix.

Before clpft 0.1's fix, `--val-fraction` carved the validation split after mining, while each negative's own
queries came from all the training qrels: a held-out query was trained on beside a document it is
relevant to. This script mines each dataset as the tuning rounds did (ANCE negatives from the packaged
all-MiniLM-L6-v2, passages cut at 128 tokens, seed 42) and counts, for the tuning set-up
(`--max-train-queries 200 --val-fraction 0.5`) and for a whole training split at `--val-fraction 0.2`,
the held-out queries that appear among the training rows' own queries (what the old code trained on)
and what `split_validation` leaves of them now (0).

    python benchmarks/studies/validation_leak.py --data ../shared/data/scifact --data ../shared/data/cranfield \
        --data ../shared/data/xquad-hi --out benchmarks/results/validation_leak
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clpft.data import load_dataset, read_train_jsonl, write_train_jsonl
from clpft.files import write_json, write_text
from clpft.mining import mine_negatives
from clpft.mining.negatives import sample_queries
from clpft.models import load_model
from clpft.training.validation import split_validation

SETUPS = [
    ("tuning rounds: 200 sampled queries, --val-fraction 0.5", 200, 0.5),
    ("whole training split, --val-fraction 0.2", None, 0.2),
]


def leak(examples, fraction: float, seed: int = 42) -> dict:
    train_before = [e for e in examples if e not in split_validation(examples, fraction, seed)[1]]
    train_after, held_out = split_validation(examples, fraction, seed)
    held = {e.query for e in held_out}

    def counted(rows):
        texts = {q for e in rows for own in e.own_queries for q in own if q in held}
        mentions = sum(1 for e in rows for own in e.own_queries for q in own if q in held)
        return len(texts), mentions

    leaked_queries, mentions = counted(train_before)
    return {
        "held_out": len(held_out),
        "training_rows": len(train_before),
        "held_out_queries_trained_on": leaked_queries,
        "share_of_held_out": round(leaked_queries / len(held_out), 4),
        "own_query_mentions": mentions,
        "after_fix": counted(train_after)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--cache", default="runs/validation-leak", help="mined files, reused when there")
    args = parser.parse_args()
    model = None
    results = {}
    for data in args.data:
        name = Path(data).name
        mined = Path(args.cache) / f"{name}.jsonl"
        if mined.is_file():
            examples = read_train_jsonl(mined)
        else:
            model = model or load_model()
            examples, _ = mine_negatives(
                model,
                load_dataset(data, "train"),
                num_negatives=4,
                seed=42,
                passage_max_tokens=128,
                show_progress=False,
            )
            mined.parent.mkdir(parents=True, exist_ok=True)
            write_train_jsonl(mined, examples)
        by_id = {e.query_id: e for e in examples}
        results[name] = {}
        for label, sample, fraction in SETUPS:
            ids = sample_queries(load_dataset(data, "train"), sample, 42)
            results[name][label] = leak([by_id[q] for q in ids], fraction)
        print(name, json.dumps(results[name]), flush=True)
    lines = [
        "# Validation queries trained on through the negatives' own queries (before the fix)",
        "",
        f"`python benchmarks/studies/validation_leak.py {' '.join('--data ' + d for d in args.data)} --out {args.out}`",
        "",
        "| dataset | set-up | held-out queries | of them in training rows' own queries | mentions | after the fix |",
        "|---|---|---|---|---|---|",
    ]
    for name, setups in results.items():
        for label, r in setups.items():
            lines.append(
                f"| {name} | {label} | {r['held_out']} | {r['held_out_queries_trained_on']} "
                f"({100 * r['share_of_held_out']:.0f}%) | {r['own_query_mentions']} | {r['after_fix']} |"
            )
    write_json(Path(args.out).with_suffix(".json"), results)
    write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
