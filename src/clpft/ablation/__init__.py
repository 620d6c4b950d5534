"""``clpft ablation``: the paper's ladder of rows on one dataset, with intervals and significance.

Every row trains on the same mined data with the same seed(s) and budget, each training and each
evaluation in its own ``clpft train`` / ``clpft eval`` process (so peak memory is per row, and the
report's numbers are exactly what ``clpft eval`` gives for the saved models). Finished rows are
cached under RUN_DIR/rows/<row>/seed<k>/ with a hash of everything that determines them, so an
interrupted ladder resumes where it stopped. ``ladder`` holds the rows, ``report`` the tables.

May import: clpft.data, clpft.evaluation, clpft.cli.parser (the rows are clpft subcommands: their options are
read from the parser that parses them) and the shared modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clpft.ablation.ladder import REFERENCES, ROWS, Row  # noqa: F401  (Row: part of this module's API)
from clpft.ablation.report import build_report, plot_report, preset_of, report_markdown  # noqa: F401 (API)
from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.files import write_json, write_text
from clpft.manifest import sha256_of
from clpft.options import SplitOptions
from clpft.presets import preset_values


@dataclasses.dataclass
class AblationOptions(SplitOptions):
    data: str
    out: str
    rows: list[str] = dataclasses.field(default_factory=lambda: list(ROWS))
    seeds: int = 1
    model: str | None = None
    mine_args: list[str] = dataclasses.field(default_factory=list)  # passed to `clpft mine`
    train_args: list[str] = dataclasses.field(default_factory=list)  # passed to `clpft train`
    eval_args: list[str] = dataclasses.field(default_factory=list)  # passed to `clpft eval`
    seed: int = 42
    quiet: bool = False


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _clpft(run_command: Callable[[list[str]], int], args: list[str], quiet: bool) -> None:
    """One clpft subcommand through ``run_command`` (the command line's ``main``, handed in by it, so this
    module does not import the CLI), in this process: a second interpreter would spend most of a small
    row's time importing torch and sentence-transformers again (about 10 s on a 2-core machine)."""
    errors = _LastLine(None if quiet else sys.stderr)
    with contextlib.redirect_stderr(errors):
        code = run_command([*args, *(["--quiet"] if quiet else [])])
    if code != 0:
        raise ClpftError(f"`clpft {' '.join(args[:1])}` failed: {errors.last or '(no message)'}")


class _LastLine(io.TextIOBase):
    """A stderr that remembers its last non-empty line and, unless quiet, passes everything on."""

    def __init__(self, echo) -> None:
        self.echo, self.last = echo, ""

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        lines = [line for line in text.strip().splitlines() if line.strip()]
        if lines:
            self.last = lines[-1].removeprefix("clpft: error: ")
        return len(text)


def own_query_options() -> set[str]:
    """`clpft mine` options that only decide the negatives' own queries (the negatives do not depend on them):
    QuerySources' declared options and the text forms of its backends and cache."""
    from clpft.options import QuerySources, cli_fields

    return {f.name for f in cli_fields(QuerySources)} | {"neg_queries", "neg_queries_cache"}


def _mine_options(mine_args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every `clpft mine` option as it will run, defaults included (so that a changed default re-mines and
    retrains), split into (what picks the negatives, what finds the negatives' own queries)."""
    from clpft.cli.parser import build_parser

    options = vars(build_parser().parse_args(["mine", "--data", "-", "--out", "-", *mine_args]))
    options = {
        k: v for k, v in options.items() if k not in ("data", "out", "command", "quiet", "config") and not callable(v)
    }
    own_queries = {k: v for k, v in options.items() if k in own_query_options()}
    return {k: v for k, v in options.items() if k not in own_queries}, own_queries


def _cached(folder: Path, key: str) -> dict | None:
    result = folder / "result.json"
    if result.is_file():
        data = json.loads(result.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return data
    return None


def run_ablation(options: AblationOptions, run_command: Callable[[list[str]], int]) -> dict[str, Any]:
    """The ladder; ``run_command(argv)`` runs one clpft subcommand and returns its exit code."""
    unknown = [r for r in options.rows if r not in ROWS]
    if unknown:
        raise ClpftError(f"unknown rows {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    if options.seeds < 1:
        raise ClpftError("--seeds must be at least 1")
    from clpft.data.download import resolve_data

    out = Path(options.out)
    data = resolve_data(options.data)
    data_key = _key(
        [
            sha256_of(p)
            for p in [
                data / "corpus.jsonl",
                data / "queries.jsonl",
                data / "qrels" / f"{options.train_split}.tsv",
                data / "qrels" / f"{options.eval_split}.tsv",
            ]
            if p.is_file()
        ]
    )
    model_args = ["--model", options.model] if options.model else []

    # 1. The training sets, mined once and shared by every row.
    negative_options, own_query_options = _mine_options(options.mine_args)
    training_sets: dict[str, Path] = {}
    for negatives in sorted({ROWS[r].negatives for r in options.rows if ROWS[r].negatives}):
        path = out / "data" / f"{negatives}.jsonl"
        key = _key(
            "mine",
            data_key,
            negatives,
            options.model,
            negative_options,
            own_query_options,
            options.seed,
            options.train_split,
        )
        if _cached(path.parent / negatives, key) is None:
            _clpft(
                run_command,
                [
                    "mine",
                    "--data",
                    str(data),
                    "--split",
                    options.train_split,
                    "--out",
                    str(path),
                    "--overwrite",
                    "--strategy",
                    negatives,
                    "--seed",
                    str(options.seed),
                    *model_args,
                    *options.mine_args,
                ],
                options.quiet,
            )
            write_json(path.parent / negatives / "result.json", {"key": key})
        training_sets[negatives] = path

    # 2. Every row and seed: train (unless base), then evaluate the saved model.
    results: dict[str, list[dict]] = {}
    for name in options.rows:
        row = ROWS[name]
        seeds = [options.seed] if row.negatives is None else [options.seed + k for k in range(options.seeds)]
        for seed in seeds:
            folder = out / "rows" / name / f"seed{seed}"
            # What trains a row: the mining options, the flags passed on and the values of the preset they select
            # (so a row trained under an older version of the preset is not taken for one under the current
            # version). Only CLP's penalty reads the negatives' own queries, so only the CLP rows are keyed on how
            # they were found. The base row trains nothing.
            training_key = [
                negative_options,
                options.train_args,
                preset_values(preset_of(options.train_args), row.train_only),
            ]
            if row.loss == "clp":
                training_key.append(own_query_options)
            key = _key(
                name,
                dataclasses.asdict(row),
                data_key,
                options.model,
                training_key if row.negatives else None,
                options.eval_args,
                seed,
                options.eval_split,
            )
            cached = _cached(folder, key)
            if cached is None:
                if not options.quiet:
                    print(f"== {name} (seed {seed}): {row.description}", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                training: dict[str, Any] = {}
                model_path = options.model
                if row.negatives is not None:
                    model_path = str(folder / "model")
                    _clpft(
                        run_command,
                        [
                            "train",
                            "--train",
                            str(training_sets[row.negatives]),
                            "--out",
                            model_path,
                            *model_args,
                            "--loss",
                            row.loss,
                            "--moe",
                            row.moe,
                            "--train-only",
                            row.train_only,
                            "--seed",
                            str(seed),
                            *options.train_args,
                        ],
                        options.quiet,
                    )
                    training = json.loads((folder / "model" / "training.json").read_text(encoding="utf-8"))
                    kill_point("ablation.row_trained")
                _clpft(
                    run_command,
                    [
                        "eval",
                        "--data",
                        str(data),
                        "--split",
                        options.eval_split,
                        "--out",
                        str(folder / "metrics.json"),
                        *(["--model", model_path] if model_path else []),
                        *options.eval_args,
                    ],
                    options.quiet,
                )
                metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
                cached = {
                    "key": key,
                    "row": name,
                    "seed": seed,
                    "metrics": metrics["metrics"],
                    "per_query_ndcg@10": {q: v["ndcg@10"] for q, v in metrics["per_query"].items()},
                    "trainable_parameters": training.get("trainable_parameters", 0),
                    "train_seconds": training.get("seconds", 0.0),
                    "peak_rss_mb": training.get("peak_rss_mb"),
                }
                write_json(folder / "result.json", cached)
            results.setdefault(name, []).append(cached)

    results = {name: results[name] for name in ROWS if name in results}  # the ladder's order, whatever --rows says
    report = build_report(results, options)
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    plot_report(report, out / "report.png")
    if not options.quiet:
        print(report_markdown(report))
    return report
