"""`st-recipe`: sentence-transformers' own documented fine-tuning recipe, run through its own code.

`sentence_transformers.util.mine_hard_negatives` on the training queries' (query, positive) pairs
(range_min 0, range_max 50, 4 negatives, sampling "top", n-tuples; the candidates are the whole corpus,
the pool clpft mines from too), then `MultipleNegativesRankingLoss` (its default scale 20) with
`SentenceTransformerTrainer`: batch sampler no_duplicates, batch 8, lr 2e-5, warm-up ratio 0.1, 2 epochs,
the model's own max_seq_length. Only the BEIR files are read with clpft's loader; the model is evaluated
afterwards with `clpft eval`, like every other row.

    python benchmarks/st_recipe.py --data ../shared/data/scifact --out runs/st-recipe/scifact/model
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="model folder to write (and OUT/recipe.json)")
    parser.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="for smoke runs")
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import mine_hard_negatives

    from clpft.data import load_dataset
    from clpft.models import default_model_path

    started = time.perf_counter()
    data = load_dataset(args.data, args.split)
    model = SentenceTransformer(args.model or str(default_model_path()), model_kwargs={"use_safetensors": True})
    pairs = {"anchor": [], "positive": []}
    for query_id in sorted(data.qrels):
        for doc_id in sorted(data.relevant(query_id)):
            pairs["anchor"].append(data.queries[query_id])
            pairs["positive"].append(data.corpus[doc_id].full_text)
    corpus = [doc.full_text for doc in data.corpus.values()]
    mined = mine_hard_negatives(
        Dataset.from_dict(pairs),
        model,
        corpus=corpus,
        range_min=0,
        range_max=50,
        num_negatives=4,
        sampling_strategy="top",
        output_format="n-tuple",
        verbose=False,
    )
    mining_seconds = time.perf_counter() - started

    out = Path(args.out)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out.with_name(out.name + ".trainer")),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=args.seed,
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=mined, loss=MultipleNegativesRankingLoss(model)
    )
    trained = time.perf_counter()
    trainer.train()
    training_seconds = time.perf_counter() - trained
    model.save(str(out), safe_serialization=True)
    record = {
        "pairs": len(pairs["anchor"]),
        "mined_rows": len(mined),
        "optimizer_steps": trainer.state.global_step,
        "mining_seconds": round(mining_seconds, 1),
        "training_seconds": round(training_seconds, 1),
        "mining_and_training_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_seq_length": model.max_seq_length,
    }
    (out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
