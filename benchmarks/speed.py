"""Training, encoding and mining throughput of clpft against what users would run instead.

    python benchmarks/speed.py --quick --out benchmarks/results/speed_quick.json     # < 10 minutes
    python benchmarks/speed.py --out benchmarks/results/speed.json                   # full (adds speed.md)

Every measurement runs in its own process (peak memory is that process's max RSS), on the same model
(the packaged all-MiniLM-L6-v2), data, batch, group size (1 positive + 4 negatives) and length limits.

Training rows, at the reference's batch (8, no accumulation) and lengths (the model's own
max_seq_length, 256, for queries and passages): ``clpft-default`` (the default `clpft run` trains: CLP
with the negatives' own queries, MoE-upcycled intermediate layers, every weight trained, precision
auto, GradCache with mini-batches of 8) against ``st-recipe`` (sentence-transformers' documented recipe
through its own trainer: MultipleNegativesRankingLoss, the no-duplicates sampler, lr 2e-5, warm-up 0.1,
fp32 as it defaults). Every negative gets a query of its own (the worst case for CLP, which encodes them
too). The full run adds ``clpft-default-no-gradcache`` (what GradCache buys), ``clpft-default-fp32`` (what
the precision buys) and ``clpft-moe-only``.

The compared pairs run twice, in alternating order, and each row's better round counts (this VM's
run-to-run noise is ~10%). Keys written (ratios are from this one run):
  train_speed_ratio    clpft-default examples/s / st-recipe examples/s
  train_memory_ratio   peak RSS, same pair
  encode_speed_ratio   clpft's encoder texts/s / SentenceTransformer.encode texts/s (PyTorch, its defaults)
  main_job_ratio       (full run) the default `clpft run`'s wall time / st-recipe's (mining + training +
                       one test evaluation), both from benchmarks/results/quality's SciFact rows; rows
                       are cached across sessions, so speed.md names each row's machine and load
plus, in the full run, the precision check (test metrics and mined negatives of every dataset in
../shared/data with fp32 and with the default precision), every row's raw numbers and the mining
search table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"
# Allocator settings come from clpft.training.runtime: clpft's rows run as `clpft` does (CLPFT_MALLOC unset: trim),
# sentence-transformers' rows with glibc untouched, as a user would run them; ``st-recipe-bounded`` gives the
# recipe the same fixed mmap threshold through glibc's own variable, to show what the allocator alone does.
ALLOCATOR_VARIABLES = (
    "CLPFT_MALLOC",
    "CLPFT_MALLOC_TUNING",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
ROW_ENV = {"st-recipe-bounded": {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}}
TRAIN_ROWS = {
    "clpft-default": dict(),  # TrainConfig's defaults (the guard's validation split is off: throughput only)
    "st-recipe": None,
    "clpft-default-no-gradcache": dict(gradcache_mini_batch=0),  # what GradCache (the default) buys
    "clpft-default-fp32": dict(precision="fp32"),
    "clpft-moe-only": dict(train_only="moe"),
    "st-recipe-bounded": None,
}
QUICK_TRAIN_ROWS = ("clpft-default", "st-recipe")
QUALITY_ROWS = Path(__file__).resolve().parent / "results" / "quality" / "rows" / "scifact"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


# ---------------------------------------------------------------------------------------------- data
def training_examples(data: Path, count: int, seed: int = 0):
    """``count`` training rows from a BEIR folder: query, a relevant passage, 4 random passages as
    negatives, and one query of its own per negative (another training query's text)."""
    from clpft.data import TrainExample, load_dataset

    dataset = load_dataset(data, "train")
    rng = random.Random(seed)
    doc_ids = sorted(dataset.corpus)
    query_ids = sorted(q for q in dataset.qrels if dataset.qrels[q])
    rows = []
    for k in range(count):
        qid = query_ids[k % len(query_ids)]
        pos = next(d for d, s in dataset.qrels[qid].items() if s > 0)
        negs = rng.sample(doc_ids, 4)
        rows.append(
            TrainExample(
                query=dataset.queries[qid],
                pos=[dataset.corpus[pos].full_text],
                neg=[dataset.corpus[d].full_text for d in negs],
                own_queries=[[dataset.queries[rng.choice(query_ids)]] for _ in negs],
                query_id=f"{qid}#{k}",
            )
        )
    return rows


def corpus_texts(data: Path, count: int) -> list[str]:
    from clpft.data import load_dataset

    dataset = load_dataset(data, "train")
    texts = [doc.full_text for doc in dataset.corpus.values()]
    return (texts * (count // len(texts) + 1))[:count]


# ------------------------------------------------------------------------------------------- workers
def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    return StepTimer()


def worker_train(row: str, args: argparse.Namespace) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    import clpft
    import clpft.models
    import clpft.training.trainer

    examples = training_examples(Path(args.data), args.steps * args.batch_size * args.grad_accum, seed=args.seed)
    model = SentenceTransformer(str(clpft.models.default_model_path()))  # the same way for every row
    model.max_seq_length = args.passage_max_tokens
    timer = _step_timer()
    rss_before = current_rss_mb()
    if TRAIN_ROWS[row] is None:
        stats = _train_st_mnrl(model, examples, args, timer)
    else:
        from clpft.training import TrainConfig, train_model

        original = clpft.training.trainer.trainer_classes

        def with_timer():
            trainer, *callbacks = original()

            class Timed(trainer):
                def __init__(self, *a, **k):
                    super().__init__(*a, **k)
                    self.add_callback(timer)

            return Timed, *callbacks

        clpft.training.trainer.trainer_classes = with_timer
        config = TrainConfig(
            **TRAIN_ROWS[row],
            epochs=1.0,
            max_steps=args.steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            val_fraction=0.0,
            query_max_tokens=args.query_max_tokens,
            passage_max_tokens=args.passage_max_tokens,
            seed=args.seed,
            logging_steps=10**6,
        )
        result = train_model(model, examples, config, show_progress=False)
        stats = {"trainable_parameters": result.trainable_parameters}
    warm = args.warmup_steps
    if len(timer.times) <= warm + 1:
        raise SystemExit(f"too few steps timed ({len(timer.times)}); raise --steps")
    seconds = timer.times[-1] - timer.times[warm]
    steps = len(timer.times) - 1 - warm
    per_step = args.batch_size * args.grad_accum
    return {
        "row": row,
        "optimizer_steps_timed": steps,
        "seconds_per_step": round(seconds / steps, 4),
        "examples_per_second": round(steps * per_step / seconds, 4),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_training_mb": rss_before,
        "torch_threads": torch.get_num_threads(),
        **stats,
    }


def _train_st_mnrl(model, examples, args, timer) -> dict:
    """sentence-transformers' documented recipe (benchmarks/st_recipe.py): its trainer, MNRL with its defaults
    (scale 20), the no-duplicates sampler, lr 2e-5, warm-up 0.1, (anchor, positive, negative_1..4)."""
    import tempfile

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    columns = {"anchor": [e.query for e in examples], "positive": [e.pos[0] for e in examples]}
    for k in range(4):
        columns[f"negative_{k + 1}"] = [e.neg[k] for e in examples]
    with tempfile.TemporaryDirectory() as scratch:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            learning_rate=2e-5,
            warmup_ratio=0.1,
            batch_sampler="no_duplicates",
            save_strategy="no",
            report_to="none",
            logging_steps=10**6,
            disable_tqdm=True,
            seed=args.seed,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args,
            train_dataset=Dataset.from_dict(columns),
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[timer],
        )
        trainer.train()
    return {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def worker_encode(row: str, args: argparse.Namespace) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    import clpft
    import clpft.models
    from clpft.mining.encode import encode_texts

    texts = corpus_texts(Path(args.data), args.encode_texts)
    if row == "clpft-encode":  # clpft's encoder with its defaults, as `clpft mine` / `clpft eval` use it
        model = clpft.load_model()

        def encode(batch):
            return encode_texts(model, batch, "document", args.passage_max_tokens)
    else:  # what a user would write: SentenceTransformer(...).encode_document with its default batch size
        model = SentenceTransformer(str(clpft.models.default_model_path()))
        model.max_seq_length = min(args.passage_max_tokens, model.max_seq_length)

        def encode(batch):
            return model.encode_document(batch, convert_to_numpy=True, normalize_embeddings=True)

    encode(texts[:32])  # warm-up
    started = time.perf_counter()
    embeddings = encode(texts)
    seconds = time.perf_counter() - started
    return {
        "row": row,
        "texts": len(texts),
        "seconds": round(seconds, 2),
        "texts_per_second": round(len(texts) / seconds, 2),
        "peak_rss_mb": peak_rss_mb(),
        "dim": int(embeddings.shape[1]),
        "torch_threads": torch.get_num_threads(),
        "checksum": float(abs(embeddings).sum()),
    }


def worker_search(row: str, args: argparse.Namespace) -> dict:
    """Exact top-k of ``queries`` unit vectors against ``docs`` unit vectors (float32), faiss or torch."""
    import numpy as np
    import torch

    from clpft.mining import search as search_module

    backend, docs, dim = row.split(":")
    docs, dim = int(docs), int(dim)
    rng = np.random.default_rng(0)
    corpus = np.empty((docs, dim), dtype=np.float32)
    for start in range(0, docs, 100_000):  # generated in slices: no float64 copy of the whole matrix
        block = rng.standard_normal((min(100_000, docs - start), dim), dtype=np.float32)
        corpus[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    queries = rng.standard_normal((args.search_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rss_data = current_rss_mb()
    started = time.perf_counter()
    scores, ids = search_module.exact_search(queries, corpus, args.top_k, backend=backend)
    seconds = time.perf_counter() - started
    # exactness spot check on 5 queries against a direct computation
    for q in range(5):
        best = np.argsort(-(corpus @ queries[q]))[: args.top_k]
        assert set(best[:10].tolist()) == set(ids[q][:10].tolist()), "search is not exact"
    return {
        "row": row,
        "backend": backend,
        "docs": docs,
        "dim": dim,
        "queries": len(queries),
        "top_k": args.top_k,
        "seconds": round(seconds, 2),
        "peak_rss_mb": peak_rss_mb(),
        "rss_with_data_mb": rss_data,
        "data_mb": round(corpus.nbytes / 2**20, 1),
        "torch_threads": torch.get_num_threads(),
    }


def worker_precision(row: str, args: argparse.Namespace) -> dict:
    """One dataset under fp32 and under the default precision: the base model's test metrics, and the
    negatives mined for the training queries from the same corpus encoding (``clpft run``'s way)."""
    import clpft
    from clpft import precision
    from clpft.data import load_dataset
    from clpft.evaluation import encode_corpus, evaluate_model
    from clpft.mining import mine_negatives

    data = Path(args.data).parent / row
    test, train = load_dataset(data, "test"), load_dataset(data, "train")
    model = clpft.load_model()
    out: dict = {"row": row, "dataset": row}
    negatives = {}
    for name in ("fp32", "auto"):
        with precision.use(name):
            started = time.perf_counter()
            corpus = encode_corpus(model, test, 256)
            encode_seconds = time.perf_counter() - started
            metrics = evaluate_model(model, test, 100, 128, 256, 64, corpus)["metrics"]
            examples, _ = mine_negatives(model, train, passage_max_tokens=256, corpus_embeddings=corpus)
        negatives[name] = {(e.query_id, d) for e in examples for d in e.neg_ids}
        out[name] = {
            "resolved": precision.resolve(name, "cpu"),
            "corpus_encoding_seconds": round(encode_seconds, 1),
            **{k: metrics[k] for k in ("ndcg@10", "ndcg@5", "recall@100", "mrr@10")},
        }
    out["max_metric_delta"] = round(max(abs(out["auto"][k] - out["fp32"][k]) for k in out["fp32"] if "@" in k), 6)
    out["negatives_overlap"] = round(len(negatives["fp32"] & negatives["auto"]) / max(1, len(negatives["fp32"])), 4)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


WORKERS = {"train": worker_train, "encode": worker_encode, "search": worker_search, "precision": worker_precision}


# -------------------------------------------------------------------------------------------- driver
def allocator_of(row: str) -> str:
    """What the row's process does with glibc's allocator (the worker applies clpft's own for clpft rows)."""
    if row.startswith("clpft"):
        from clpft.training.runtime import malloc_mode

        return f"clpft {malloc_mode()}"
    extra = ROW_ENV.get(row, {})
    return "glibc" + "".join(f", {k}={v}" for k, v in extra.items())


def run_worker(kind: str, row: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    env.update(ROW_ENV.get(row, {}))
    command = [sys.executable, __file__, "--worker", f"{kind}={row}", *args.passthrough]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{kind} {row} failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["malloc"] = allocator_of(row)
    out["process_seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"  {kind:6} {row:24} {out['malloc']:7} "
        + ", ".join(
            f"{k} {out[k]}"
            for k in ("examples_per_second", "seconds_per_step", "texts_per_second", "seconds", "peak_rss_mb")
            if k in out
        ),
        flush=True,
    )
    return out


def markdown(report: dict) -> str:
    lines = [
        f"# clpft speed benchmark ({'quick' if report['quick'] else 'full'})",
        "",
        f"{report['date']}, {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"torch threads {report['machine']['torch_threads']}; command `{report['command']}`; "
        f"{report['seconds']:.0f} s in all.",
        "",
        "## Ratios (measured in this run)",
        "",
        "| key | value | target |",
        "|---|---|---|",
    ]
    targets = {
        "train_speed_ratio": ">= 1.2",
        "train_memory_ratio": "<= 0.8",
        "encode_speed_ratio": ">= 2.0",
        "main_job_ratio": "<= 0.5",
    }
    for key, target in targets.items():
        if key in report:
            lines.append(f"| `{key}` | {report[key]:.3f} | {target} |")
    lines += [
        "",
        f"## Training (batch {report['settings']['batch_size']} x accumulation {report['settings']['grad_accum']}, "
        f"1 positive + 4 negatives, every negative with one own query, query/passage max "
        f"{report['settings']['query_max_tokens']}/{report['settings']['passage_max_tokens']} tokens, "
        f"{report['settings']['steps']} optimizer steps, first {report['settings']['warmup_steps']} not timed)",
        "",
        "| row | malloc | examples/s | s/step | peak RSS MB | trainable params |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["train"] or []:
        lines.append(
            f"| {r['row']} | {r['malloc']} | {r['examples_per_second']:.3f} | {r['seconds_per_step']:.3f} | "
            f"{r['peak_rss_mb']:.0f} | {r['trainable_parameters']:,} |"
        )
    lines += [
        "",
        f"## Encoding ({report['settings']['encode_texts']} corpus texts, passage max "
        f"{report['settings']['passage_max_tokens']} tokens; clpft: its defaults (token-budget batches); "
        "sentence-transformers: `encode_document` with its default batch size)",
        "",
        "| row | texts/s | seconds | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for r in report["encode"]:
        lines.append(f"| {r['row']} | {r['texts_per_second']:.1f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    if report.get("precision"):
        lines += [
            "",
            "## Precision: fp32 against the default (auto), base model, test split, passages at 256 tokens",
            "",
            "| dataset | auto is | nDCG@10 fp32 | nDCG@10 auto | largest metric delta | mined negatives in common | "
            "corpus encoding s fp32 / auto |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["precision"]:
            lines.append(
                f"| {r['dataset']} | {r['auto']['resolved']} | {r['fp32']['ndcg@10']:.4f} | {r['auto']['ndcg@10']:.4f} "
                f"| {r['max_metric_delta']:.4f} | {100 * r['negatives_overlap']:.1f}% | "
                f"{r['fp32']['corpus_encoding_seconds']:.0f} / {r['auto']['corpus_encoding_seconds']:.0f} |"
            )
    if report.get("main_job"):
        m = report["main_job"]
        lines += [
            "",
            "## Main job (benchmarks/results/quality, SciFact)",
            "",
            "Each row's wall time is its own processes' (mining, training, the test evaluations); rows are cached "
            "across sessions, so the machine and its load are named: a ratio of rows from different machines is "
            "not a measurement of one.",
            "",
            "| row | wall s | test nDCG@10 | commit | machine | load (15 min) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {r['wall_s']:.0f} | {r['ndcg@10']:.4f} | {r['commit']} | {r['cpu']} "
                f"| {r['load_avg_15min']} |"
                for name, r in m.items()
            ),
        ]
    if report.get("search"):
        lines += [
            "",
            f"## Mining search (exact top-{report['settings']['top_k']}, "
            f"{report['settings']['search_queries']:,} random unit queries, float32)",
            "",
            "| backend | docs | dim | seconds | data MB | peak RSS MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["search"]:
            lines.append(
                f"| {r['backend']} | {r['docs']:,} | {r['dim']} | {r['seconds']:.1f} | {r['data_mb']:.0f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced sizes: under 10 minutes on a 2-core machine")
    parser.add_argument(
        "--out", default=None, help="JSON file (default: benchmarks/results/speed[_quick].json); a .md beside it"
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR folder the texts come from")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per training row")
    parser.add_argument("--warmup-steps", type=int, default=2, help="first optimizer steps not timed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--query-max-tokens", type=int, default=256)
    parser.add_argument("--passage-max-tokens", type=int, default=256)
    parser.add_argument("--encode-texts", type=int, default=None)
    parser.add_argument("--search-queries", type=int, default=10_000)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument(
        "--search",
        default=None,
        help="comma-separated backend:docs:dim cases (default: quick 100k x 384; full 100k and 1M x 384 and 1024)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        choices=("train", "encode", "search", "precision"),
        default=None,
        help="run one part (its keys only); the ratios need train and encode",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (7 if args.quick else 25)
    args.encode_texts = args.encode_texts or (192 if args.quick else 1000)

    if args.worker:
        kind, row = args.worker.split("=", 1)
        if row.startswith("clpft"):  # as the `clpft` command does before anything else
            from clpft.training.runtime import bound_malloc

            bound_malloc()
        print(json.dumps(WORKERS[kind](row, args)))
        return

    keep = (
        "--data",
        "--steps",
        "--warmup-steps",
        "--batch-size",
        "--grad-accum",
        "--query-max-tokens",
        "--passage-max-tokens",
        "--encode-texts",
        "--search-queries",
        "--top-k",
        "--seed",
    )
    args.passthrough = [x for flag in keep for x in (flag, str(getattr(args, flag.lstrip("-").replace("-", "_"))))]
    started = time.perf_counter()
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "quick": args.quick,
        "machine": machine(),
        "settings": {k.lstrip("-").replace("-", "_"): getattr(args, k.lstrip("-").replace("-", "_")) for k in keep},
    }
    report["train"], report["encode"], report["search"], report["precision"] = [], [], [], []
    print("training", flush=True)
    rows = QUICK_TRAIN_ROWS if args.quick else tuple(TRAIN_ROWS)
    report["train"] = [] if args.only not in (None, "train") else [run_worker("train", r, args) for r in rows]
    # A second round of the pair the ratio compares, in the other order: this VM's run-to-run noise is
    # ~10%, so each row's ratio uses its better round (as timeit takes the best repeat).
    if args.only in (None, "train"):
        report["train"] += [run_worker("train", row, args) for row in reversed(QUICK_TRAIN_ROWS)]
    print("encoding", flush=True)
    report["encode"] = (
        []
        if args.only not in (None, "encode")
        else [run_worker("encode", row, args) for row in ("clpft-encode", "st-encode", "st-encode", "clpft-encode")]
    )
    cases = args.search or (
        "faiss:100000:384,torch:100000:384"
        if args.quick
        else "faiss:100000:384,torch:100000:384,faiss:100000:1024,torch:100000:1024,"
        "faiss:1000000:384,torch:1000000:384,faiss:1000000:1024,torch:1000000:1024"
    )
    if not args.quick and args.only in (None, "precision"):
        print("precision", flush=True)
        report["precision"] = [
            run_worker("precision", d, args)
            for d in ("scifact", "cranfield", "xquad-hi")
            if (Path(args.data).parent / d).is_dir()
        ]
    print("mining search", flush=True)
    report["search"] = (
        []
        if args.only not in (None, "search")
        else [run_worker("search", case, args) for case in cases.split(",") if case]
    )

    def best(rows, name, key):
        values = [r[key] for r in rows if r["row"] == name]
        return (min if key == "peak_rss_mb" else max)(values) if values else None

    ours = best(report["train"], "clpft-default", "examples_per_second")
    theirs = best(report["train"], "st-recipe", "examples_per_second")
    if ours and theirs:
        report["train_speed_ratio"] = round(ours / theirs, 4)
        report["train_memory_ratio"] = round(
            best(report["train"], "clpft-default", "peak_rss_mb") / best(report["train"], "st-recipe", "peak_rss_mb"),
            4,
        )
    if not args.quick:
        main_job = {
            name: json.loads((QUALITY_ROWS / f"{name}.json").read_text())
            for name in ("default", "st-recipe")
            if (QUALITY_ROWS / f"{name}.json").is_file()
        }
        if len(main_job) == 2:
            report["main_job"] = {
                name: {k: r.get(k, "not recorded") for k in ("wall_s", "ndcg@10", "commit", "cpu", "load_avg_15min")}
                for name, r in main_job.items()
            }
            report["main_job_ratio"] = round(main_job["default"]["wall_s"] / main_job["st-recipe"]["wall_s"], 4)
    if report["encode"]:
        report["encode_speed_ratio"] = round(
            best(report["encode"], "clpft-encode", "texts_per_second")
            / best(report["encode"], "st-encode", "texts_per_second"),
            4,
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    name = f"speed{'_quick' if args.quick else ''}{'_' + args.only if args.only else ''}"
    out = Path(args.out) if args.out else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
