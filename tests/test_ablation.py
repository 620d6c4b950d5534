"""`clpft ablation` on the tiny model: report files, numbers equal to `clpft eval`, cached rows."""

from __future__ import annotations

import dataclasses
import json

from clpft.cli import main
from clpft.presets import PRESETS


def test_ablation_report_and_cache(tiny_model_dir, tiny_beir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ladder"
    args = [
        "ablation",
        "--data",
        str(tiny_beir),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--rows",
        "base,ance-clp-moe,ance-infonce",
        "--num-negatives",
        "2",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    assert main(args) == 0
    assert {"report.md", "report.json", "report.png"} <= {p.name for p in out.iterdir()}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == ["base", "ance-infonce", "ance-clp-moe"]
    assert rows["ance-clp-moe"]["trainable_parameters"] < rows["ance-infonce"]["trainable_parameters"]
    assert set(rows["ance-clp-moe"]["p_value"]) == {"base", "ance-infonce"}
    assert "ance-clp-moe" in (out / "report.md").read_text()

    # the report's numbers are what `clpft eval` gives for the saved model
    model = out / "rows" / "ance-clp-moe" / "seed42" / "model"
    assert (
        main(["eval", "--data", str(tiny_beir), "--model", str(model), "--out", str(tmp_path / "m.json"), "--quiet"])
        == 0
    )
    evaluated = json.loads((tmp_path / "m.json").read_text())["metrics"]
    for metric, value in evaluated.items():
        assert rows["ance-clp-moe"]["metrics"][metric]["mean"] == value

    # a second run recomputes nothing: every row is cached
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("rows/*/seed*/result.json")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("rows/*/seed*/result.json")}
    assert main([*args[:-1], "--rows", "base,nope"]) == 2
    assert "unknown rows nope" in capsys.readouterr().err

    # the negatives' own queries matter only to the CLP rows: another source re-mines and retrains ance-clp-moe,
    # and keeps ance-infonce (its negatives are the same)
    moe_result = out / "rows" / "ance-clp-moe" / "seed42" / "result.json"
    infonce_result = out / "rows" / "ance-infonce" / "seed42" / "result.json"
    assert main([*args, "--neg-queries", "none"]) == 0
    assert moe_result.stat().st_mtime_ns != stamps[moe_result]
    assert infonce_result.stat().st_mtime_ns == stamps[infonce_result]
    # the mining options are keyed as they run, defaults included: a changed default (here: the search
    # depth) re-mines and retrains every trained row, not base
    from clpft.options import MiningOptions

    monkeypatch.setitem(MiningOptions.__init__.__kwdefaults__, "rank_to", 7)
    stamps = {
        p: p.stat().st_mtime_ns for p in [*out.glob("rows/*/seed*/result.json"), out / "data" / "ance" / "result.json"]
    }
    assert main(args) == 0
    changed = {p.parent.parent.name for p, stamp in stamps.items() if p.stat().st_mtime_ns != stamp}
    assert changed == {"ance-clp-moe", "ance-infonce", "data"}

    # the preset reaches every trained row, and a new version of a preset's values retrains them (not base;
    # the changed mining default above stays in place, so only the preset differs)
    row_result = out / "rows" / "ance-infonce" / "seed42" / "result.json"
    base_result = out / "rows" / "base" / "seed42" / "result.json"
    config = json.loads((out / "rows" / "ance-infonce" / "seed42" / "model" / "training.json").read_text())["config"]
    assert (config["preset"], config["learning_rate"], config["epochs"]) == ("clpft", 1e-3, 1)
    assert config["temperature"] == PRESETS["clpft"].temperature["all"]
    changed = {**PRESETS["clpft"].temperature, "all": 0.5}
    monkeypatch.setitem(PRESETS, "clpft", dataclasses.replace(PRESETS["clpft"], temperature=changed))
    assert main(args) == 0
    assert row_result.stat().st_mtime_ns != stamps[row_result] and base_result.stat().st_mtime_ns == stamps[base_result]
    monkeypatch.undo()
    assert main([*args, "--rows", "ance-infonce", "--preset", "paper"]) == 0
    config = json.loads((out / "rows" / "ance-infonce" / "seed42" / "model" / "training.json").read_text())["config"]
    assert (config["preset"], config["temperature"], config["learning_rate"]) == ("paper", 0.02, 1e-3)


def test_report_tests_every_row_against_st_mnrl_too():
    from clpft.ablation import AblationOptions, build_report, report_markdown
    from clpft.evaluation.metrics import METRICS

    def result(row, scores):
        return [
            {
                "row": row,
                "seed": 42,
                "metrics": {m: sum(scores) / len(scores) for m in METRICS},
                "per_query_ndcg@10": {f"q{i}": v for i, v in enumerate(scores)},
                "trainable_parameters": 1,
                "train_seconds": 1.0,
                "peak_rss_mb": None,
            }
        ]

    results = {
        "base": result("base", [0.1, 0.2, 0.3, 0.4]),
        "ance-clp-moe": result("ance-clp-moe", [0.5, 0.6, 0.7, 0.8]),
        "st-mnrl": result("st-mnrl", [0.5, 0.6, 0.7, 0.8]),
    }
    report = build_report(results, AblationOptions(data="d", out="o"))
    rows = {row["row"]: row for row in report["rows"]}
    assert set(rows["ance-clp-moe"]["p_value"]) == {"base", "st-mnrl"}
    assert rows["ance-clp-moe"]["p_value"]["st-mnrl"] == 1.0  # identical per-query scores
    assert (
        rows["ance-clp-moe"]["p_value"]["base"] == 0.125
    )  # 4 queries, all better: 2 of the 16 sign flips are as extreme
    assert "| p vs base | p vs st-mnrl |" in report_markdown(report)


def test_rows_are_the_ladder_options_with_what_each_row_sets_replaced():
    from clpft.ablation import ROWS, AblationOptions, row_mining, row_training
    from clpft.options import MiningOptions, QuerySources, TrainConfig
    from clpft.presets import PRESETS

    options = AblationOptions(
        data="d",
        out="o",
        seed=7,
        mining=MiningOptions(rank_to=20, query_sources=QuerySources(backends=[], llm_timeout=5.0)),
        train=TrainConfig(epochs=1, penalty_weight=0.3),
    )
    moe = row_training(options, ROWS["ance-clp-moe"], seed=8)
    # the preset fills the learning rate and temperature for what this row trains, as it would on the command line
    assert (moe.loss, moe.moe, moe.train_only, moe.seed) == ("clp", "intermediate", "moe", 8)
    assert (moe.learning_rate, moe.temperature) == (PRESETS["clpft"].learning_rate["moe"], 0.02)
    assert (moe.epochs, moe.penalty_weight) == (1, 0.3)
    assert moe == TrainConfig(epochs=1, penalty_weight=0.3, loss="clp", moe="intermediate", train_only="moe", seed=8)
    # a learning rate that was given stays given
    given = dataclasses.replace(options, train=TrainConfig(learning_rate=3e-4))
    assert row_training(given, ROWS["ance-infonce"], seed=1).learning_rate == 3e-4
    assert row_training(given, ROWS["ance-clp-moe"], seed=1).learning_rate == 3e-4

    mining = row_mining(options, "random", "o/data/random.jsonl")
    assert (mining.strategy, mining.seed, mining.rank_to) == ("random", 7, 20)
    assert mining.query_sources.cache_path == "o/data/random.jsonl.neg_queries.sqlite"
    # the report names the settings given, as the flags that give them (row settings left out)
    assert options.mine_args == ["--rank-to", "20", "--neg-queries", "none", "--llm-timeout", "5.0"]
    assert options.train_args == ["--epochs", "1", "--penalty-weight", "0.3"]
