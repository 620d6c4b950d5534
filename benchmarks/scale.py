"""How mining and training scale to a 100k-document corpus: projected from small corpora, then measured.

    python benchmarks/scale.py --out benchmarks/results/scale          # ~35 min on 2 cores
    python benchmarks/scale.py --sizes 5183,20000 --out /tmp/scale     # the projection only

The corpus at each size is SciFact's own 5,183 passages (so its training queries keep their real positives)
plus synthetic passages up to the size. A synthetic passage copies the shape of a random real one: a title
and a text of the same word counts, each word drawn from SciFact's corpus by its frequency there. So the
token lengths, which set the encoding cost, follow SciFact's distribution, and the search and the
own-query lookup see a corpus of the full size. The datasets are written under ``--work`` (a temporary
folder by default), never into the repository.

Each size runs ``clpft mine`` with its defaults (the packaged all-MiniLM-L6-v2, precision auto) as its own
process: wall seconds and peak RSS (the process's max resident set, from wait4). The largest size then
runs ``clpft train`` for ``--train-steps`` optimizer steps on what it mined (the default preset; the
guard off, since only throughput is measured) and reports training rows/s and peak RSS; a training
step costs the same whatever the corpus size, which this checks. The projection fits
``seconds = a + b * docs`` and ``peak MB = c + d * docs`` to the sizes below the largest and reads them
at the largest, beside what was measured there. Finished sizes are cached in ``OUT.json`` (keyed on the
clpft version and the settings) so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def build_dataset(source: Path, size: int, folder: Path, seed: int = 0) -> Path:
    """SciFact's corpus padded with synthetic passages of its length distribution to ``size`` passages."""
    if (folder / "corpus.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    docs = [json.loads(line) for line in (source / "corpus.jsonl").open()]
    counts = collections.Counter(word for d in docs for word in f"{d.get('title', '')} {d['text']}".split())
    words, weights = list(counts), list(counts.values())
    rng = random.Random(seed)
    temp = folder / "corpus.jsonl.tmp"
    with temp.open("w") as out:
        for d in docs[:size]:
            out.write(json.dumps(d) + "\n")
        for i in range(max(0, size - len(docs))):
            shape = rng.choice(docs)
            title_words, text_words = len(shape.get("title", "").split()), len(shape["text"].split())
            drawn = rng.choices(words, weights, k=title_words + text_words)
            row = {
                "_id": f"synthetic-{i}",
                "title": " ".join(drawn[:title_words]),
                "text": " ".join(drawn[title_words:]),
            }
            out.write(json.dumps(row) + "\n")
    temp.rename(folder / "corpus.jsonl")
    (folder / "queries.jsonl").write_text((source / "queries.jsonl").read_text())
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "train.tsv").write_text((source / "qrels" / "train.tsv").read_text())
    return folder


def timed(command: list[str]) -> dict:
    """Run ``command`` as its own process: wall seconds and its peak RSS in MB (wait4's ru_maxrss)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"scale: error: {' '.join(command)} failed:\n{output[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line through (docs, value) points: (intercept, slope)."""
    if len(points) == 1:
        docs, value = points[0]
        return 0.0, value / docs
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - slope * mean_x, slope


def markdown(report: dict) -> str:
    lines = [
        "# Scale: mining and training on a corpus of up to 100k passages",
        "",
        f"{report['date']}, {report['machine']['cpu']}, {report['machine']['cores']} cores; clpft "
        f"{report['clpft']}; `{report['command']}`. Corpus: SciFact's passages padded with synthetic ones of its "
        "length distribution (benchmarks/scale.py says how). `clpft mine` with its defaults, one process per size.",
        "",
        "| passages | mining s | passages/s | peak RSS MB | rows mined |",
        "|---|---|---|---|---|",
    ]
    for row in report["mine"]:
        lines.append(
            f"| {row['docs']:,} | {row['seconds']:.0f} | {row['docs'] / row['seconds']:.1f} | {row['peak_rss_mb']:,} "
            f"| {row['rows']:,} |"
        )
    projection = report.get("projection")
    if projection:
        lines += [
            "",
            f"Projected at {projection['docs']:,} passages from the smaller sizes (a line through them) against "
            "measured:",
            "",
            "| | projected | measured |",
            "|---|---|---|",
            f"| mining s | {projection['seconds']:.0f} | {projection['measured_seconds']:.0f} |",
            f"| peak RSS MB | {projection['peak_rss_mb']:,.0f} | {projection['measured_peak_rss_mb']:,} |",
        ]
    train = report.get("train")
    if train:
        lines += [
            "",
            f"Training on the {train['docs']:,}-passage mining's rows: `{train['command']}`: {train['steps']} "
            f"optimizer steps of {train['batch_size']} rows in {train['train_seconds']:.0f} s = "
            f"**{train['rows_per_second']:.2f} rows/s**, peak RSS {train['peak_rss_mb']:,} MB (process wall "
            f"{train['seconds']:.0f} s, model loading and saving included).",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--data", default=str(DATA), help="the BEIR dataset the corpus grows from (SciFact)")
    parser.add_argument(
        "--sizes",
        default="5183,20000,100000",
        help="corpus sizes, comma-separated; the last is measured against the projection",
    )
    parser.add_argument(
        "--train-steps", type=int, default=12, help="optimizer steps timed at the largest size (0: none)"
    )
    parser.add_argument(
        "--work", default=None, help="folder for the synthetic datasets and outputs (default: a temporary one)"
    )
    args = parser.parse_args()
    import clpft
    from clpft.files import write_json, write_text

    sizes = sorted(int(s) for s in args.sizes.split(","))
    out = Path(args.out)
    settings = {"clpft": clpft.__version__, "data": str(Path(args.data).resolve()), "train_steps": args.train_steps}
    cache = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    if cache.get("settings") != settings:
        cache = {}
    done = {row["docs"]: row for row in cache.get("mine", [])}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="clpft-scale-"))
    clpft_cli = [sys.executable, "-m", "clpft.cli"]
    report = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "machine": machine(),
        "clpft": clpft.__version__,
        "settings": settings,
        "mine": [],
    }

    def mine(size: int) -> tuple[Path, dict]:
        """`clpft mine` on the corpus of ``size`` passages: its train.jsonl and its timing."""
        folder = build_dataset(Path(args.data), size, work / f"corpus-{size}")
        train_file = work / f"train-{size}.jsonl"
        command = [*clpft_cli, "mine", "--data", str(folder), "--out", str(train_file), "--overwrite", "--quiet"]
        return train_file, timed(command)

    def save() -> None:
        write_json(out.with_suffix(".json"), report)
        write_text(out.with_suffix(".md"), markdown(report))

    for size in sizes:
        if size in done:
            report["mine"].append(done[size])
            continue
        print(f"mining {size:,} passages", flush=True)
        train_file, timing = mine(size)
        row = {"docs": size, **timing}
        row["rows"] = sum(1 for _ in train_file.open())
        report["mine"].append(row)
        print(row, flush=True)
        save()
    smaller = [r for r in report["mine"] if r["docs"] < sizes[-1]]
    largest = report["mine"][-1]
    if smaller:
        a, b = fit([(r["docs"], r["seconds"]) for r in smaller])
        c, d = fit([(r["docs"], r["peak_rss_mb"]) for r in smaller])
        report["projection"] = {
            "docs": largest["docs"],
            "seconds": round(a + b * largest["docs"], 1),
            "peak_rss_mb": round(c + d * largest["docs"]),
            "measured_seconds": largest["seconds"],
            "measured_peak_rss_mb": largest["peak_rss_mb"],
        }
    if args.train_steps:
        if cache.get("train"):
            report["train"] = cache["train"]
        else:
            train_file = work / f"train-{largest['docs']}.jsonl"
            if not train_file.is_file():  # a resumed run: the cached mining's file is in another work folder
                mine(largest["docs"])
            model = work / "model"
            command = [*clpft_cli, "train", "--train", str(train_file), "--out", str(model), "--overwrite", "--quiet"]
            command += ["--max-steps", str(args.train_steps), "--no-guard", "--val-fraction", "0"]
            print(f"training {args.train_steps} steps", flush=True)
            row = timed(command)
            training = json.loads((model / "training.json").read_text())
            seconds, steps = training["seconds"], training["optimizer_steps"]
            batch = training["config"]["batch_size"] * training["config"]["grad_accum"]
            report["train"] = {
                "docs": largest["docs"],
                "command": "clpft train --train train.jsonl --out model --max-steps "
                f"{args.train_steps} --no-guard --val-fraction 0",
                "steps": steps,
                "batch_size": batch,
                "train_seconds": seconds,
                "rows_per_second": round(steps * batch / seconds, 3),
                **row,
            }
    save()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
