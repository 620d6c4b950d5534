"""``clpft ablation``: the paper's ladder of rows on one dataset, with intervals and significance.

Every row trains on the same mined data with the same seed(s) and budget. A row is the ladder's options
(``AblationOptions.mining`` and ``.train``, the declared dataclasses) with what the row sets replaced
(``dataclasses.replace``, ``TrainConfig.replace``), run through the functions behind `clpft mine`, `clpft
train` and `clpft eval` (clpft.cli.subcommands), so the report's numbers are exactly what ``clpft eval`` gives
for the saved models. Finished rows are cached under RUN_DIR/rows/<row>/seed<k>/ with a hash of everything
that determines them, so an interrupted ladder resumes where it stopped. ``ladder`` holds the rows,
``report`` the tables.

May import: clpft.data, clpft.evaluation, clpft.cli (the rows run the subcommands' functions) and the shared
modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from clpft.ablation.ladder import REFERENCES, ROWS, Row  # noqa: F401  (Row: part of this module's API)
from clpft.ablation.report import build_report, plot_report, preset_of, report_markdown  # noqa: F401 (API)
from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.files import write_json, write_text
from clpft.manifest import sha256_of
from clpft.options import MiningOptions, QuerySources, SplitOptions, TrainConfig, as_flags, cli_fields


@dataclasses.dataclass
class AblationOptions(SplitOptions):
    """The ladder's settings: ``mining`` and ``train`` are what every row starts from (each row replaces the
    negatives it trains on, its loss, MoE, what trains and its seed); evaluation reads their length limits,
    encoding batch size and precision."""

    data: str
    out: str
    rows: list[str] = dataclasses.field(default_factory=lambda: list(ROWS))
    seeds: int = 1
    model: str | None = None
    trust_remote_code: bool = False
    mining: MiningOptions = dataclasses.field(default_factory=MiningOptions)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    seed: int = 42
    quiet: bool = False

    # what the rows set themselves, left out of the flags below
    ROW_FIELDS = ("strategy", "loss", "moe", "train_only", "seed")

    @property
    def mine_args(self) -> list[str]:
        """The mining settings given (those that differ from the declared defaults), as `clpft mine` flags."""
        defaults, sources, default_sources = (
            MiningOptions(),
            self.mining.query_sources or QuerySources(),
            QuerySources(),
        )
        changed = {
            f.name: getattr(self.mining, f.name)
            for f in cli_fields(MiningOptions)
            if f.name not in self.ROW_FIELDS and getattr(self.mining, f.name) != getattr(defaults, f.name)
        }
        own = {
            f.name: getattr(sources, f.name)
            for f in cli_fields(QuerySources)
            if getattr(sources, f.name) != getattr(default_sources, f.name)
        }
        backends = (
            []
            if sources.backends == default_sources.backends
            else ["--neg-queries", ",".join(sources.backends) or "none"]
        )
        return [*as_flags(changed, MiningOptions), *backends, *as_flags(own, QuerySources)]

    @property
    def train_args(self) -> list[str]:
        """The training settings given (apart from the preset's values and what each row sets), as `clpft train`
        flags."""
        given = {k: v for k, v in self.train.given().items() if k not in self.ROW_FIELDS}
        return as_flags(given, TrainConfig)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _quiet_if(quiet: bool):
    """Stdout silenced for a quiet ladder (the subcommands' own summaries); errors still raise."""
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()


def mining_key(mining: MiningOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what picks the negatives, what finds the negatives' own queries): every field as it will run, defaults
    included (a changed default re-mines and retrains). The own queries' cache is where they are kept, not
    which they are."""
    negatives = {k: v for k, v in dataclasses.asdict(mining).items() if k != "query_sources"}
    sources = mining.query_sources or QuerySources()
    own_queries = {k: v for k, v in dataclasses.asdict(sources).items() if k != "cache_path"}
    return negatives, own_queries


def row_training(options: AblationOptions, row: Row, seed: int) -> TrainConfig:
    """The training config of one ladder row: the ladder's, with the row's loss, MoE, trained layers and seed
    (the preset fills what it filled before for these: a MoE-only row gets its learning rate)."""
    return options.train.replace(loss=row.loss, moe=row.moe, train_only=row.train_only, seed=seed)


def row_mining(options: AblationOptions, negatives: str, train_file: Path) -> MiningOptions:
    """The mining options of one training set: the ladder's, with its negatives and seed (the own queries'
    cache beside the training file unless one was named)."""
    sources = options.mining.query_sources or QuerySources()
    cache = sources.cache_path or f"{train_file}.neg_queries.sqlite"
    return dataclasses.replace(
        options.mining,
        strategy=negatives,
        seed=options.seed,
        query_sources=dataclasses.replace(sources, cache_path=cache, seed=options.seed),
    )


def _cached(folder: Path, key: str) -> dict | None:
    result = folder / "result.json"
    if result.is_file():
        data = json.loads(result.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return data
    return None


def run_ablation(options: AblationOptions) -> dict[str, Any]:
    """The ladder: mine each training set once, then train and test every row and seed (finished ones cached)."""
    from clpft.cli.subcommands import eval_command, mine_command, train_command
    from clpft.data.download import resolve_data

    unknown = [r for r in options.rows if r not in ROWS]
    if unknown:
        raise ClpftError(f"unknown rows {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    if options.seeds < 1:
        raise ClpftError("--seeds must be at least 1")
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
    model = {"model": options.model, "trust_remote_code": options.trust_remote_code}

    # 1. The training sets, mined once and shared by every row.
    training_sets: dict[str, Path] = {}
    mined_keys: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # by negatives: what picked them, own queries
    for negatives in sorted({ROWS[r].negatives for r in options.rows if ROWS[r].negatives}):
        path = out / "data" / f"{negatives}.jsonl"
        mining = row_mining(options, negatives, path)
        mined_keys[negatives] = mining_key(mining)
        key = _key("mine", data_key, options.model, *mined_keys[negatives], options.train_split)
        if _cached(path.parent / negatives, key) is None:
            with _quiet_if(options.quiet):
                mine_command(
                    str(data), options.train_split, str(path), mining, **model, overwrite=True, quiet=options.quiet
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
            config = row_training(options, row, seed) if row.negatives else None
            # What trains a row: its mining and its training config as they run (the preset's values included,
            # so a row trained under an older version of the preset is not taken for one under the current
            # version). Only CLP's penalty reads the negatives' own queries, so only the CLP rows are keyed on how
            # they were found. The base row trains nothing; every row is tested with the same settings.
            training_key = None
            if row.negatives:
                negatives, own_queries = mined_keys[row.negatives]
                training_key = [
                    negatives,
                    {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_dir"},
                ]
                if row.loss == "clp":
                    training_key.append(own_queries)
            testing = {
                "top_k": options.top_k,
                "query_max_tokens": options.mining.query_max_tokens,
                "passage_max_tokens": options.mining.passage_max_tokens,
                "encode_batch_size": options.mining.encode_batch_size,
            }
            key = _key(
                name,
                dataclasses.asdict(row),
                data_key,
                options.model,
                training_key,
                testing | {"precision": options.train.precision},
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
                with _quiet_if(options.quiet):
                    if config is not None:
                        model_path = str(folder / "model")
                        train_command(
                            str(training_sets[row.negatives]),
                            model_path,
                            config,
                            model=options.model,
                            trust_remote_code=options.trust_remote_code,
                            quiet=options.quiet,
                        )
                        training = json.loads((folder / "model" / "training.json").read_text(encoding="utf-8"))
                        kill_point("ablation.row_trained")
                    eval_command(
                        str(data),
                        options.eval_split,
                        str(folder / "metrics.json"),
                        model=model_path,
                        trust_remote_code=options.trust_remote_code,
                        **testing,
                        quiet=options.quiet,
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
