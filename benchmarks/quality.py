"""Quality against sentence-transformers' own recipe: base, `st-recipe`, the default `clpft run` and
`--preset paper` on every dataset, with significance tests, wall time, peak memory and a zero-shot table.

Each row runs in its own processes (so wall time and peak memory are the row's own, measured with
/usr/bin/time) and is cached in OUT/rows/DATASET/ROW.json (small, committed; models and logs stay in
WORK, runs/quality by default) with a key of everything that decides it (the data files' checksums, the
row's command, the package versions, clpft's resolved defaults and presets, and for `st-recipe` the
recipe script itself); a stopped benchmark resumes where it stopped, and the table says which commit
each row ran on.

    python benchmarks/quality.py --out benchmarks/results/quality                    # hours on 2 cores
    python benchmarks/quality.py --out /tmp/quality --quick                          # minutes: a smoke run
    python benchmarks/quality.py --out benchmarks/results/quality --datasets scifact \
        --rows base,st-recipe
    python benchmarks/quality.py --out benchmarks/results/quality --cached-only       # report what has run
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
DATASETS = ("scifact", "cranfield", "xquad-hi")
ROWS = ("base", "st-recipe", "default", "paper")
# Levers tried on the default (the quality issue's "best setting tried"): each is the default `clpft run`
# plus its flags, run only when `--rows` names it, cached and tested like the rows above, left out of the
# README's headline table. Each was decided on by its validation curve (training.json's guard), never by
# its test score, which is reported.
GRID_STUDIED = "0.1,0.2,0.25,0.3,0.4,0.5,0.6,0.7,0.75,0.8,0.9"  # the default's quarters and every tenth
TRIED_ROWS = {
    "default-3-epochs": (
        "the default with 3 epochs: at 2 epochs SciFact's best validation step was the last one",
        ["--epochs", "3"],
    ),
    "default-3-epochs-averaged": (
        "3 epochs (SciFact's 2-epoch validation curve peaked at its last step), a moving average of the weights "
        "(decay 0.95) beside the best step, merges with the start at every tenth of α and the default's quarters, the "
        "best validation score "
        "kept; every candidate's per-query validation scores recorded for benchmarks/studies/selection_rules.py",
        [
            "--epochs",
            "3",
            "--ema",
            "0.95",
            "--merge-grid",
            GRID_STUDIED,
            "--select",
            "best",
        ],
    ),
    "previous-default": (
        "the default before 2026-12-07: 2 epochs, merges at the quarters, the one-standard-error rule, no moving "
        "average (it kept the untouched model's zero-shot quality and gave up most of the in-domain gain)",
        ["--epochs", "2", "--select", "one-se", "--merge-grid", "0.25,0.5,0.75", "--ema", "0"],
    ),
    "default-moe-none": (
        "the default without MoE (--moe none): the control row for MoE on another encoder",
        ["--moe", "none"],
    ),
    "default-refit": (
        "the default with --refit: once the guard has chosen the stopping point and the merge on its held-out 10%, "
        "train again from the start on every training query to that point (as the recipe trains on all of them)",
        ["--refit"],
    ),
    "default-fp32": (
        "the default with --precision fp32: what a CPU without native bf16 computes (auto is fp32 there)",
        ["--precision", "fp32"],
    ),
    "default-neg1-batch16": (
        "the default with 1 hard negative per row and batch 16 (the same 48 texts a step, half the steps): on "
        "SciFact's validation split (benchmarks/results/levers.md) 0.8798 against the default's 0.8839 in 691 "
        "against 1,657 training seconds",
        ["--num-negatives", "1", "--batch-size", "16"],
    ),
}
# st-recipe's own model evaluated at --precision fp32 (its training computes in fp32 anyway: the recipe sets no
# bf16); run when named, after st-recipe, whose model it reads (its key holds st-recipe's)
RECIPE_FP32 = "st-recipe-fp32"
TRIED_ROWS[RECIPE_FP32] = ("st-recipe's model evaluated with --precision fp32, as a CPU without native bf16 would", [])
CLPFT_ROWS = ("default", "paper", *(r for r in TRIED_ROWS if r != RECIPE_FP32))  # rows that are one `clpft run`
ZERO_SHOT = ("scifact", "cranfield")  # models trained on the first, evaluated on the second's test split
METRICS = ("ndcg@10", "ndcg@5", "recall@100", "mrr@10")


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` (wall seconds, peak RSS in MB), its output appended to ``log``; a failure stops here."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss, log.open("a") as out:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command], stdout=out, stderr=out)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
        return seconds, int(Path(rss.name).read_text().split()[-1]) / 1024


class LoadSampler:
    """The machine's 1-minute load average, sampled every ``every`` seconds while the block runs: a row's time
    compares with another's only at a similar load, and the 15-minute average at its end misses most of a
    long row."""

    def __init__(self, every: float = 30.0) -> None:
        self.every, self.samples, self._stop = every, [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> float:
        return round(sum(self.samples) / len(self.samples), 2)


def clpft(*args: str) -> list[str]:
    return [sys.executable, "-m", "clpft.cli", *args]


def commands(
    row: str, data: Path, folder: Path, quick: bool, model: Path | None = None
) -> tuple[list[list[str]], Path]:
    """The row's commands and the metrics.json its test evaluation writes. ``model``: another start than the
    packaged all-MiniLM-L6-v2 (every command gets ``--model``, so the row's key holds it)."""
    small = ["--max-train-queries", "16", "--epochs", "1"] if quick else []
    start = ["--model", str(model)] if model is not None else []
    if row == "base":
        return [
            clpft("eval", "--data", str(data), "--out", str(folder / "metrics.json"), "--overwrite", "--quiet", *start)
        ], folder / "metrics.json"
    if row == RECIPE_FP32:
        recipe_model = folder.parent / "st-recipe" / "model"
        metrics = folder / "metrics.json"
        evaluate = ["eval", "--data", str(data), "--model", str(recipe_model), "--out", str(metrics)]
        return [clpft(*evaluate, "--overwrite", "--quiet", "--precision", "fp32")], metrics
    if row == "st-recipe":
        recipe = [sys.executable, str(HERE / "st_recipe.py"), "--data", str(data), "--out", str(folder / "model")]
        recipe += start
        evaluate = clpft(
            "eval",
            "--data",
            str(data),
            "--model",
            str(folder / "model"),
            "--out",
            str(folder / "metrics.json"),
            "--overwrite",
            "--quiet",
        )
        return [recipe + (["--max-steps", "4"] if quick else []), evaluate], folder / "metrics.json"
    flags = ["--preset", "paper"] if row == "paper" else TRIED_ROWS[row][1] if row in TRIED_ROWS else []
    return [
        clpft(
            "run", "--data", str(data), "--out", str(folder / "run"), "--overwrite", "--quiet", *flags, *small, *start
        )
    ], folder / "run" / "metrics.json"


def storage_name(dataset: str, model: Path | None) -> str:
    """Where a dataset's rows are kept: DATASET for the packaged model, DATASET@MODEL_FOLDER_NAME otherwise."""
    return dataset if model is None else f"{dataset}@{model.name}"


def versions(with_clpft: bool = True) -> dict[str, str]:
    """The installed versions a row's result depends on (part of its key, and recorded in it)."""
    names = ("torch", "transformers", "sentence-transformers") + (("clpft",) if with_clpft else ())
    return {name: metadata.version(name) for name in names}


def why_stale(saved: dict) -> str:
    """What changed since a cached row ran, as far as the row records it: a fresh install that pulls a newer
    transformers makes every cached row stale, and saying which version moved saves a rerun of hours."""
    then = saved.get("versions")
    if not then:
        return "its inputs changed (code, data, defaults or package versions; the row records no versions)"
    moved = [f"{name} {then.get(name, '?')} -> {now}" for name, now in versions().items() if then.get(name) != now]
    return ", ".join(moved) if moved else "its inputs changed (command, data or defaults)"


def row_key(
    row: str, dataset: str, data: Path, command: list[list[str]], with_clpft: bool = True, depends_on: str | None = None
) -> str:
    from clpft.manifest import sha256_of
    from clpft.options import TrainConfig
    from clpft.presets import PRESETS

    parts = {
        "row": row,
        "dataset": dataset,
        "data": [
            sha256_of(p)
            for p in sorted(data.rglob("*"))
            if p.is_file() and "raw" not in p.parts and p.suffix in (".jsonl", ".tsv")
        ],
        "command": [[part.replace(str(ROOT), ".") for part in c[1:]] for c in command],
        "versions": versions(with_clpft),
    }
    if row in CLPFT_ROWS:
        # Only the row's own preset: a change to the default's preset leaves the paper rows' results as they are.
        preset = "paper" if row == "paper" else "clpft"
        parts["defaults"] = dataclasses.asdict(TrainConfig(preset=preset))
        parts["preset"] = dataclasses.asdict(PRESETS[preset])
    if row == "st-recipe":
        parts["recipe"] = hashlib.sha256((HERE / "st_recipe.py").read_bytes()).hexdigest()
    if depends_on is not None:  # the key of the row whose model this one reads: its rerun makes this one stale
        parts["depends_on"] = depends_on
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_part(row: str, number: int, part: list[str], data: Path, folder: Path) -> tuple[float, float, str | None]:
    """One command of a row, or its cached timing when the same command already ran on the same inputs and
    left its output. Only st-recipe's training part can be reused this way (its output, the model folder,
    does not depend on clpft: its key leaves clpft's version out), so a change to clpft's evaluation
    re-evaluates the recipe's model without training it again."""
    reusable = row == "st-recipe" and number == 0
    record = folder / f"part-{number}.json"
    key = row_key(row, folder.parent.name, data, [part], with_clpft=not reusable)
    if reusable and record.is_file() and (folder / "model" / "recipe.json").is_file():
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            print(f"   part {number}: reused ({saved['seconds']:.0f} s when it ran)", flush=True)
            return saved["seconds"], saved["peak_rss_mb"], saved.get("source", "an earlier run of the same command")
    seconds, rss = timed(part, folder / "log.txt")
    record.write_text(json.dumps({"key": key, "seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1)}) + "\n")
    return seconds, rss, None


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return f"{names[0] if names else 'unknown'}, {os.cpu_count()} cores"


def commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src", "benchmarks"], capture_output=True, text=True
    ).stdout.strip()
    return (done.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def load_of(row: dict) -> str:
    """The load a row ran at, for the tables: the mean over the row where sampled, else the 15-minute average at
    its end (rows before 2026-12-07)."""
    if row.get("load_mean") is not None:
        return f"{row['load_mean']} (mean)"
    return f"{row.get('load_avg_15min', '-')} (end, 15 min)"


def mine_train_seconds(report: dict) -> float:
    """A `clpft run`'s mining and training seconds from its metrics.json: the corpus encoding, the mining, the
    guarded training and, with --refit, the second training on every query (its own entry in the guard's record:
    metrics.json's "training" seconds are the first training's only)."""
    seconds = report["seconds"]
    refit_seconds = report["training"].get("guard", {}).get("refit", {}).get("seconds", 0.0)
    return round(seconds["corpus_encoding"] + seconds["mining"] + seconds["training"] + refit_seconds, 1)


def run_row(
    row: str, dataset: str, work: Path, cache: Path, quick: bool, cached_only: bool = False, model: Path | None = None
) -> dict | None:
    """One row: its models and logs under WORK (runs/quality), its result (small, committed) under CACHE.
    With ``cached_only``, None for a row whose result is not cached (nothing runs)."""
    data = DATA / dataset
    name = storage_name(dataset, model)
    folder = work / "rows" / name / row
    command, metrics_file = commands(row, data, folder, quick, model)
    depends_on = None
    if row == RECIPE_FP32:  # it evaluates st-recipe's model: only after that row, and keyed on it
        recipe_row = cache / name / "st-recipe.json"
        if not recipe_row.is_file():
            return None if cached_only else sys.exit(f"{RECIPE_FP32} needs the st-recipe row of {name} first")
        depends_on = json.loads(recipe_row.read_text())["key"]
    key = row_key(row, name, data, command, depends_on=depends_on)
    cached = cache / name / f"{row}.json"
    saved = json.loads(cached.read_text()) if cached.is_file() else None
    if saved is not None and saved.get("key") == key:
        return saved
    if cached_only:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    print(f"== {name} / {row}" + (f" (its cached result is stale: {why_stale(saved)})" if saved else ""), flush=True)
    wall, peak, reused = 0.0, 0.0, {}
    with LoadSampler() as load:
        for number, part in enumerate(command):
            seconds, rss, source = run_part(row, number, part, data, folder)
            wall, peak = wall + seconds, max(peak, rss)
            if source:
                reused[number] = source
    report = json.loads(metrics_file.read_text())
    tested = report.get("finetuned", report)
    result = {
        "key": key,
        "row": row,
        "dataset": dataset,
        "start_model": str(model) if model is not None else "all-MiniLM-L6-v2 (packaged)",
        "commit": commit(),
        "command": [" ".join(c[1:]) for c in command],
        **{m: tested["metrics"][m] for m in METRICS},
        "per_query_ndcg@10": {q: v["ndcg@10"] for q, v in tested["per_query"].items()},
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1),
        # the machine's load while the row ran (2 cores: about 2 when the row had it to itself): the 15-minute
        # average at its end, and the mean of the 1-minute average sampled every 30 s over the whole row
        "load_avg_15min": round(os.getloadavg()[2], 2),
        "load_mean": load.mean(),
        # rows are cached across sessions, which may get different machines: wall times compare only on one
        "cpu": cpu_model(),
        "versions": versions(),
        "reused_parts": {str(k): v for k, v in reused.items()},  # commands not rerun: their timing, and whence
    }
    if row in ("st-recipe", RECIPE_FP32):
        model_folder = folder / "model" if row == "st-recipe" else folder.parent / "st-recipe" / "model"
        recipe = json.loads((model_folder / "recipe.json").read_text())
        result.update(mine_train_s=recipe["mining_and_training_seconds"], optimizer_steps=recipe["optimizer_steps"])
        result["model"] = str(model_folder)
    elif row in CLPFT_ROWS:
        result.update(
            mine_train_s=mine_train_seconds(report),
            optimizer_steps=report["training"]["optimizer_steps"],
            guard=report["training"].get("guard", {}),
            base_ndcg10=report["base"]["metrics"]["ndcg@10"],
        )
        result["model"] = str(folder / "run" / "model")
    result["model"] = result.get("model")
    cached.parent.mkdir(parents=True, exist_ok=True)
    (cached.parent / (cached.name + ".tmp")).write_text(json.dumps(result, indent=2) + "\n")
    os.replace(cached.parent / (cached.name + ".tmp"), cached)
    return result


def zero_shot(results: dict, work: Path, cache: Path, cached_only: bool = False) -> dict:
    trained_on, tested_on = ZERO_SHOT
    if trained_on not in results or not (DATA / tested_on).is_dir():
        return {}
    table = {}
    for row, result in results[trained_on].items():
        folder = work / "rows" / f"{trained_on}-on-{tested_on}" / row
        model = [] if row == "base" else ["--model", result["model"]]
        command = clpft(
            "eval",
            "--data",
            str(DATA / tested_on),
            "--out",
            str(folder / "metrics.json"),
            "--overwrite",
            "--quiet",
            *model,
        )
        key = hashlib.sha256((result["key"] + tested_on).encode()).hexdigest()[:16]
        cached = cache / f"{trained_on}-on-{tested_on}" / f"{row}.json"
        if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
            table[row] = json.loads(cached.read_text())
            continue
        if cached_only:
            continue
        if model and not Path(result["model"]).is_dir():
            print(
                f"zero-shot {row}: its model is not on this machine (remove {cache / trained_on / row}.json to "
                "retrain it); left out",
                flush=True,
            )
            continue
        folder.mkdir(parents=True, exist_ok=True)
        cached.parent.mkdir(parents=True, exist_ok=True)
        timed(command, folder / "log.txt")
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        table[row] = {"key": key, "ndcg@10": metrics["ndcg@10"], "commit": commit()}
        cached.write_text(json.dumps(table[row], indent=2) + "\n")
    base = table.get("base", {}).get("ndcg@10")
    for row in table.values():
        row["delta_vs_base"] = round(row["ndcg@10"] - base, 4) if base is not None else None
    return {"trained_on": trained_on, "tested_on": tested_on, "rows": table}


def add_tests(results: dict) -> None:
    """Each row's p against the default (``p_vs_default``) and against st-recipe (``p_vs_st_recipe``, the
    bar of the quality issue's point 1): the paired randomisation test over the reference's test queries."""
    from clpft.evaluation.statistics import paired_randomization_test

    for rows in results.values():
        for reference, field in (("default", "p_vs_default"), ("st-recipe", "p_vs_st_recipe")):
            against = rows.get(reference)
            for name, row in rows.items():
                if against is None or name == reference:
                    row[field] = None
                    continue
                queries = sorted(against["per_query_ndcg@10"])
                row[field] = round(
                    paired_randomization_test(
                        [row["per_query_ndcg@10"].get(q, 0.0) for q in queries],
                        [against["per_query_ndcg@10"][q] for q in queries],
                    ),
                    4,
                )


def build_report(results: dict, shots: dict) -> dict:
    """quality.json: per dataset {"rows": {NAME: {"ndcg@10", ..., "p_vs_default", "wall_s", "peak_rss_mb", ...}}},
    and the top-level "zero_shot" table (per-query values stay in the cached rows)."""
    report = {
        dataset: {
            "rows": {name: {k: v for k, v in row.items() if k != "per_query_ndcg@10"} for name, row in rows.items()}
        }
        for dataset, rows in results.items()
    }
    report["zero_shot"] = shots
    return report


def pvalue(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def signed(value: float | None) -> str:
    """A change against the untouched model, or "-" when that model's row is not in the table."""
    return "-" if value is None else f"{value:+.4f}"


def markdown(results: dict, shots: dict, command: str, missing: list[str] = (), stale: dict | None = None) -> str:
    lines = [
        "# Quality: clpft's default against sentence-transformers' recipe",
        "",
        f"`{command}`",
        "",
        "Test splits; the start is all-MiniLM-L6-v2 as packaged, or the model a section names (DATASET@MODEL). "
        "p: paired randomisation test of per-query nDCG@10 against "
        "the default row. wall: the row's own processes (for clpft rows: mining, training and both evaluations; "
        "for st-recipe: its mining and training, then one evaluation); mine+train: without the evaluations; "
        "load: the machine's 15-minute load average when the row ended (2 cores: about 2 means the row had the "
        "machine to itself).",
        "",
    ]
    if missing:
        lines += [f"Not run yet (left out of this report, `--cached-only`): {', '.join(missing)}.", ""]
    if stale:
        lines += ["Cached under other inputs, so not reused:", ""]
        lines += [f"- {name}: {reason}" for name, reason in stale.items()] + [""]
    for dataset, rows in results.items():
        lines += [
            f"## {dataset}",
            "",
            "| row | nDCG@10 | nDCG@5 | recall@100 | MRR@10 | p vs default | p vs st-recipe | wall s | "
            "mine+train s | peak MB | steps | saved (guard / merge) | load | commit |",
            "|" + "---|" * 14,
        ]
        for name, r in rows.items():
            guard = r.get("guard") or {}
            saved = guard.get("chosen", "-") if r.get("guard") is not None else "-"
            p, p_recipe = (pvalue(r.get(field)) for field in ("p_vs_default", "p_vs_st_recipe"))
            lines.append(
                f"| {name} | {r['ndcg@10']:.4f} | {r['ndcg@5']:.4f} | {r['recall@100']:.4f} | {r['mrr@10']:.4f} "
                f"| {p} | {p_recipe} | {r['wall_s']:.0f} | {r.get('mine_train_s', '-')} | {r['peak_rss_mb']:.0f} | "
                f"{r.get('optimizer_steps', '-')} | {saved} | {load_of(r)} | {r['commit']} |"
            )
        machines = sorted({r.get("cpu", "not recorded (rows before 2026-12-03)") for r in rows.values()})
        lines.append(f"- machines these rows ran on: {'; '.join(machines)}")
        installed = sorted(
            {
                ", ".join(f"{k} {v}" for k, v in r["versions"].items()) if r.get("versions") else "not recorded"
                for r in rows.values()
            }
        )
        lines.append(f"- package versions: {'; '.join(installed)}")
        for name, r in rows.items():
            if name in TRIED_ROWS:
                what = "a check of st-recipe" if name == RECIPE_FP32 else "a lever tried, not the default"
                lines.append(f"- {name} ({what}): {TRIED_ROWS[name][0]}")
            for number, source in (r.get("reused_parts") or {}).items():
                lines.append(f"- {name}: command {number} ({r['command'][int(number)][:60]}...) reused from {source}")
        lines.append("")
    if shots:
        lines += [
            f"## Zero-shot: trained on {shots['trained_on']}, tested on {shots['tested_on']}",
            "",
            "| row | nDCG@10 | change vs the untouched model |",
            "|---|---|---|",
        ]
        for name, r in shots["rows"].items():
            lines.append(f"| {name} | {r['ndcg@10']:.4f} | {signed(r.get('delta_vs_base'))} |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- quality table: benchmarks/quality.py --readme -->", "<!-- end of quality table -->"


def readme_block(results: dict, shots: dict) -> str:
    """The README's headline table, from the same rows as quality.md."""
    lines = [
        README_START,
        "| dataset | row | nDCG@10 | nDCG@5 | MRR@10 | recall@100 | p vs default | mine+train s | wall s | peak MB "
        "| saved |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, rows in results.items():
        for name, r in rows.items():
            if name not in ROWS:  # a lever tried: quality.md has it
                continue
            p = pvalue(r.get("p_vs_default"))
            saved = (r.get("guard") or {}).get("chosen", "-")
            label = f"**{name}**" if name == "default" else name
            lines.append(
                f"| {dataset} | {label} | {r['ndcg@10']:.4f} | {r['ndcg@5']:.4f} | {r['mrr@10']:.4f} | "
                f"{r['recall@100']:.4f} | {p} | {r.get('mine_train_s', '-')} | {r['wall_s']:.0f} | "
                f"{r['peak_rss_mb']:.0f} | {saved} |"
            )
    if shots:
        base = shots["rows"].get("base", {}).get("ndcg@10")
        lines += [
            "",
            f"Zero-shot, trained on {shots['trained_on']}, tested on {shots['tested_on']}'s test split"
            + (f" (the untouched model: {base:.4f}):" if base is not None else ":"),
            "",
            "| row | nDCG@10 | change |",
            "|---|---|---|",
            *(
                f"| {n} | {r['ndcg@10']:.4f} | {signed(r.get('delta_vs_base'))} |"
                for n, r in shots["rows"].items()
                if n in ROWS
            ),
        ]
    return "\n".join([*lines, README_END])


def write_readme(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{path}: no quality table markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(head + block + tail, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="writes OUT/quality.json and OUT/quality.md")
    parser.add_argument(
        "--work",
        default=str(ROOT / "runs" / "quality"),
        help="where rows run and are cached (models, logs): WORK/rows/DATASET/ROW (default: runs/quality)",
    )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument(
        "--rows",
        default=None,
        help=f"default: {','.join(ROWS)}; levers tried on the default, run only when named: {','.join(TRIED_ROWS)} "
        "(--cached-only reports those that ran)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: Cranfield, 16 training queries, 1 epoch")
    parser.add_argument(
        "--model",
        default=None,
        help="start from this model folder instead of the packaged all-MiniLM-L6-v2 (rows kept as DATASET@FOLDER; "
        "--cached-only reports every model's cached rows)",
    )
    parser.add_argument("--readme", default=None, help="also write the headline table into this README's markers")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: report the rows already cached under OUT/rows, naming the ones not run yet",
    )
    args = parser.parse_args()
    from clpft.files import write_json, write_text

    out, work = Path(args.out), Path(args.work)
    datasets = ["cranfield"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    rows = [r.strip() for r in (args.rows or ",".join(ROWS)).split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS) - set(TRIED_ROWS)) + sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown rows or datasets: {', '.join(unknown)}")
    cache = out / "rows"
    model = Path(args.model).resolve() if args.model else None
    if model is not None and not (model / "modules.json").is_file() and not (model / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: not a model folder")
    starts = [model]
    if args.cached_only and model is None:  # every other start whose rows are cached, as MODEL folder names
        others = {p.name.split("@", 1)[1] for p in cache.glob("*@*") if p.is_dir()}
        recorded = {}
        for name in sorted(others):
            for row_file in sorted(cache.glob(f"*@{name}/*.json")):
                recorded.setdefault(name, json.loads(row_file.read_text()).get("start_model"))
        starts += [Path(path) for path in recorded.values() if path]
    results, missing, stale = {}, [], {}
    for start in starts:
        for dataset in datasets:
            name = storage_name(dataset, start)
            results[name] = {}
            for row in rows:
                result = run_row(row, dataset, work, cache, args.quick, cached_only=args.cached_only, model=start)
                if result is None:
                    if start is None or (cache / name).is_dir():
                        missing.append(f"{name}/{row}")
                    if (cached := cache / name / f"{row}.json").is_file():
                        stale[f"{name}/{row}"] = why_stale(json.loads(cached.read_text()))
                else:
                    results[name][row] = result
            for row in TRIED_ROWS if args.cached_only and args.rows is None else ():
                if (result := run_row(row, dataset, work, cache, args.quick, True, start)) is not None:
                    results[name][row] = result
            if not results[name] and start is not None:
                del results[name]
    add_tests(results)
    shots = {} if args.quick else zero_shot(results, work, cache, args.cached_only)
    report = build_report(results, shots)
    report["not_run"] = missing
    report["stale"] = stale  # rows cached under other inputs, and what moved
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:])
    write_json(out / "quality.json", report)
    write_text(out / "quality.md", markdown(results, shots, command, missing, stale))
    if args.readme:
        write_readme(Path(args.readme), readme_block(results, shots))
    print(markdown(results, shots, command, missing, stale))


if __name__ == "__main__":
    main()
