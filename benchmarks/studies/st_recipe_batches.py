"""What `st-recipe`'s batches hold: sentence-transformers' no-duplicates sampler on each dataset's mined rows.

`st-recipe` (benchmarks/st_recipe.py) mines 4 hard negatives per (query, positive) pair and trains with
`batch_sampler="no_duplicates"` at batch 8: a batch never holds the same text twice, in any column.
When a few passages are among the top negatives of most queries (a model that does not read the
language ranks the same "hub" passages first for every query), almost every pair of rows shares a text
and the sampler's pass over the data yields batches of one row. The trainer still takes `len(sampler)`
batches per epoch (the size it was promised, rows / 8), so it trains on a fraction of the rows.

This script mines exactly as `st-recipe` does (the packaged all-MiniLM-L6-v2, `mine_hard_negatives`
range 0-50, 4 negatives, "top", n-tuples, on the training split) and iterates the same sampler (seed
42, as the trainer passes it) for each epoch: the batch sizes, the rows the trainer's 2 x len(sampler)
optimizer steps see, and how many mined rows hold the most common negative.

    python benchmarks/studies/st_recipe_batches.py --data ../shared/data/xquad-hi --data ../shared/data/cranfield \
        --out benchmarks/results/st_recipe_batches
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from clpft.files import write_json, write_text


def sampler_report(data_dir: Path, batch_size: int, epochs: int, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
    from sentence_transformers.util import mine_hard_negatives

    from clpft.data import load_dataset
    from clpft.models import default_model_path

    data = load_dataset(data_dir, "train")
    model = SentenceTransformer(str(default_model_path()), model_kwargs={"use_safetensors": True})
    pairs = {"anchor": [], "positive": []}
    for query_id in sorted(data.qrels):
        for doc_id in sorted(data.relevant(query_id)):
            pairs["anchor"].append(data.queries[query_id])
            pairs["positive"].append(data.corpus[doc_id].full_text)
    mined = mine_hard_negatives(
        Dataset.from_dict(pairs),
        model,
        corpus=[doc.full_text for doc in data.corpus.values()],
        range_min=0,
        range_max=50,
        num_negatives=4,
        sampling_strategy="top",
        output_format="n-tuple",
        verbose=False,
    )
    negative_columns = [name for name in mined.column_names if name.startswith("negative")]
    negative_counts = collections.Counter(text for name in negative_columns for text in mined[name])
    rows_with_top_negative = sum(
        1 for row in mined if negative_counts.most_common(1)[0][0] in {row[name] for name in negative_columns}
    )

    sampler = NoDuplicatesBatchSampler(
        mined, batch_size=batch_size, drop_last=False, generator=torch.Generator(), seed=seed
    )
    promised = len(sampler)
    report = {
        "dataset": data_dir.name,
        "pairs": len(pairs["anchor"]),
        "mined_rows": len(mined),
        "distinct_negatives": len(negative_counts),
        "corpus": len(data.corpus),
        "rows_holding_the_most_common_negative": rows_with_top_negative,
        "batches_promised_per_epoch": promised,
        "epochs": [],
    }
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        sizes = [len(batch) for batch in sampler]
        trained = sizes[:promised]  # the trainer takes len(dataloader) batches per epoch, then starts the next
        report["epochs"].append(
            {
                "batches_in_one_pass": len(sizes),
                "batch_size_counts": dict(sorted(collections.Counter(sizes).items())),
                "batches_trained": len(trained),
                "rows_trained": sum(trained),
                "mean_batch_size_trained": round(sum(trained) / len(trained), 2),
            }
        )
    report["optimizer_steps"] = sum(epoch["batches_trained"] for epoch in report["epochs"])
    report["rows_trained"] = sum(epoch["rows_trained"] for epoch in report["epochs"])
    report["share_of_the_recipes_rows"] = round(report["rows_trained"] / (epochs * len(mined)), 4)
    return report


def markdown(reports: list[dict], command: str) -> str:
    lines = [
        "# st-recipe's batches: the no-duplicates sampler on each dataset's mined rows",
        "",
        f"`{command}`. Mining as `benchmarks/st_recipe.py` does; the sampler at batch 8, seed 42; the trainer "
        "takes len(sampler) batches per epoch, 2 epochs.",
        "",
        "| dataset | mined rows | distinct negatives / corpus | rows holding the most common negative | "
        "batches per pass (sizes) | optimizer steps | rows trained | share of 2 epochs' rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        first = report["epochs"][0]
        sizes = ", ".join(f"{size}: {count}" for size, count in first["batch_size_counts"].items())
        lines.append(
            f"| {report['dataset']} | {report['mined_rows']} | {report['distinct_negatives']} / {report['corpus']} | "
            f"{report['rows_holding_the_most_common_negative']} | {first['batches_in_one_pass']} ({sizes}) | "
            f"{report['optimizer_steps']} | {report['rows_trained']} | {report['share_of_the_recipes_rows']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    reports = [sampler_report(Path(path), args.batch_size, args.epochs, args.seed) for path in args.data]
    command = "python benchmarks/studies/st_recipe_batches.py " + " ".join(sys.argv[1:])
    write_json(args.out + ".json", {"command": command, "datasets": reports})
    write_text(args.out + ".md", markdown(reports, command))
    print(markdown(reports, command))


if __name__ == "__main__":
    main()
