"""Where do negatives' own queries come from, and does topping them up help?

Mines ANCE negatives once on a dataset's training split (qrels-only queries), derives a second
training set where negatives without a qrels query get extractive ones (``qrels,extractive``),
trains the CLP + MoE row on each with the same budget and seed, and evaluates both on the test split.

    python benchmarks/studies/neg_queries.py --data ../shared/data/scifact --max-train-queries 400 --epochs 1

Writes benchmarks/results/neg_queries_<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import clpft
from clpft.data import load_dataset
from clpft.evaluation import encode_corpus, evaluate_model
from clpft.mining import mine_negatives
from clpft.ownqueries import QuerySources, fill_own_queries
from clpft.training import TrainConfig, train_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--max-train-queries", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.perf_counter()
    train = load_dataset(args.data, "train")
    test = load_dataset(args.data, "test")
    model = clpft.load_model()
    limit = model.max_seq_length
    corpus_emb = encode_corpus(model, test, limit)
    base = evaluate_model(model, test, corpus_embeddings=corpus_emb, query_max_tokens=128, passage_max_tokens=limit)
    qrels_only, stats = mine_negatives(
        model,
        train,
        max_train_queries=args.max_train_queries,
        seed=args.seed,
        passage_max_tokens=limit,
        corpus_embeddings=corpus_emb,
    )
    topped = copy.deepcopy(qrels_only)
    summaries = fill_own_queries(topped, train, QuerySources(backends=["qrels", "extractive"]))
    with_queries = sum(1 for e in topped for qs in e.own_queries if qs)

    rows = {}
    for name, examples in (("qrels", qrels_only), ("qrels,extractive", topped)):
        tuned = clpft.load_model()
        result = train_model(tuned, examples, TrainConfig(epochs=args.epochs, seed=args.seed), show_progress=False)
        metrics = evaluate_model(tuned, test, query_max_tokens=128, passage_max_tokens=limit)["metrics"]
        rows[name] = {"metrics": metrics, "train_seconds": result.seconds}
        print(name, json.dumps(metrics), flush=True)

    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/studies/neg_queries.py " + " ".join(sys.argv[1:]),
        "data": args.data,
        "train_queries": stats.queries,
        "negatives": stats.negatives,
        "negatives_with_qrels_queries": stats.negatives_with_queries,
        "share_with_qrels_queries": round(stats.share_with_queries, 4),
        "negatives_with_queries_after_extractive": with_queries,
        "generation": [s.line() for s in summaries],
        "base": base["metrics"],
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    name = Path(args.data).name
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"neg_queries_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Negatives' own queries on {name} ({report['date']})",
        "",
        f"Command: `{report['command']}` (model: packaged all-MiniLM-L6-v2; CLP + MoE row, paper defaults otherwise).",
        "",
        f"- {stats.negatives} mined negatives for {stats.queries} training queries; "
        f"{stats.negatives_with_queries} ({100 * stats.share_with_queries:.1f}%) have a query from the training "
        "qrels alone.",
        f"- With `qrels,extractive`: {with_queries} ({100 * with_queries / stats.negatives:.1f}%).",
        "",
        "| negatives' queries | nDCG@5 | nDCG@10 | recall@100 | MRR@10 |",
        "|---|---|---|---|---|",
        f"| base model (no training) | {base['metrics']['ndcg@5']:.4f} | {base['metrics']['ndcg@10']:.4f} | "
        f"{base['metrics']['recall@100']:.4f} | {base['metrics']['mrr@10']:.4f} |",
    ]
    for row, data in rows.items():
        m = data["metrics"]
        lines.append(
            f"| `{row}` | {m['ndcg@5']:.4f} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} |"
        )
    lines += ["", f"Wall time {report['seconds'] / 60:.1f} min.", ""]
    (RESULTS / f"neg_queries_{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
