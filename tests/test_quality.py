"""benchmarks/quality.py's report: the schema other tools read, p-values against the default row, the table."""

from __future__ import annotations

from conftest import load_benchmark


def quality():
    return load_benchmark("quality")


def row(name, scores, wall=10.0):
    return {
        "key": "k",
        "row": name,
        "dataset": "d",
        "commit": "abc",
        "command": [],
        "ndcg@10": sum(scores) / len(scores),
        "ndcg@5": 0.5,
        "recall@100": 0.9,
        "mrr@10": 0.6,
        "per_query_ndcg@10": {f"q{i}": v for i, v in enumerate(scores)},
        "wall_s": wall,
        "peak_rss_mb": 100.0,
    }


def test_report_schema_and_p_values(tmp_path):
    module = quality()
    results = {
        "scifact": {
            "base": row("base", [0.1, 0.2, 0.3, 0.4]),
            "default": row("default", [0.5, 0.6, 0.7, 0.8]),
            "st-recipe": row("st-recipe", [0.5, 0.6, 0.7, 0.8]),
        }
    }
    module.add_tests(results)
    shots = {
        "trained_on": "scifact",
        "tested_on": "cranfield",
        "rows": {"base": {"ndcg@10": 0.45, "delta_vs_base": 0.0}},
    }
    report = module.build_report(results, shots)
    assert set(report) == {"scifact", "zero_shot"}
    rows = report["scifact"]["rows"]
    assert rows["default"]["p_vs_default"] is None
    assert rows["st-recipe"]["p_vs_default"] == 1.0  # identical per-query scores
    assert rows["base"]["p_vs_default"] == 0.125  # 4 queries, all worse: 2 of 16 sign flips as extreme
    assert {"ndcg@10", "p_vs_default", "wall_s", "peak_rss_mb"} <= set(rows["base"])
    assert "per_query_ndcg@10" not in rows["base"]
    table = module.markdown(results, shots, "python benchmarks/quality.py")
    assert "| st-recipe | 0.6500 |" in table and "## Zero-shot: trained on scifact, tested on cranfield" in table
    # the README's table comes from the same rows, between its markers, the rest of the README untouched
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{module.README_START}\nold table\n{module.README_END}\nafter\n")
    module.write_readme(readme, module.readme_block(results, shots))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "old table" not in text
    assert "| scifact | **default** | 0.6500 |" in text and "| base | 0.4500 | +0.0000 |" in text


def test_cached_only_runs_nothing_and_reads_the_cache(tmp_path):
    module = quality()
    work, cache = tmp_path / "work", tmp_path / "rows"
    # nothing cached: no row runs, nothing is created
    assert module.run_row("base", "cranfield", work, cache, quick=True, cached_only=True) is None
    assert not work.exists() and not cache.exists()
    # a cached row with the current key is what the report reads
    data = module.DATA / "cranfield"
    command, _ = module.commands("base", data, work / "rows" / "cranfield" / "base", True)
    cached = cache / "cranfield" / "base.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(
        module.json.dumps({**row("base", [0.3]), "key": module.row_key("base", "cranfield", data, command)})
    )
    assert module.run_row("base", "cranfield", work, cache, quick=True, cached_only=True)["ndcg@10"] == 0.3
    # a stale key (another command, data or version) counts as not run
    cached.write_text(module.json.dumps({**row("base", [0.3]), "key": "stale"}))
    assert module.run_row("base", "cranfield", work, cache, quick=True, cached_only=True) is None


def test_a_stale_row_says_which_version_moved():
    module = quality()
    now = module.versions()
    then = {**now, "transformers": "5.0.0"}
    assert module.why_stale({"key": "k", "versions": then}) == f"transformers 5.0.0 -> {now['transformers']}"
    assert "command, data or defaults" in module.why_stale({"key": "k", "versions": now})
    assert "records no versions" in module.why_stale({"key": "k"})
    table = module.markdown({}, {}, "python benchmarks/quality.py", ["scifact/base"], {"scifact/base": "x 1 -> 2"})
    assert "- scifact/base: x 1 -> 2" in table
    results = {"scifact": {"base": {**row("base", [0.3]), "versions": then}}}
    module.add_tests(results)
    table = module.markdown(results, {}, "python benchmarks/quality.py")
    assert "- package versions: " + ", ".join(f"{k} {v}" for k, v in then.items()) in table


def test_a_zero_shot_row_without_the_untouched_model_prints_no_change():
    module = quality()
    results = {"scifact": {"paper": row("paper", [0.5, 0.6])}}
    module.add_tests(results)
    # --rows paper alone: the zero-shot table has no base row, so no change can be computed
    shots = {
        "trained_on": "scifact",
        "tested_on": "cranfield",
        "rows": {"paper": {"ndcg@10": 0.458, "delta_vs_base": None}},
    }
    assert "| paper | 0.4580 | - |" in module.markdown(results, shots, "python benchmarks/quality.py --rows paper")
    assert "| paper | 0.4580 | - |" in module.readme_block(results, shots)


def test_a_lever_tried_is_the_default_run_plus_its_flags_reported_but_not_in_the_readme(tmp_path):
    module = quality()
    name = next(iter(module.TRIED_ROWS))
    data = module.DATA / "scifact"
    tried, _ = module.commands(name, data, tmp_path / name, False)
    default, _ = module.commands("default", data, tmp_path / name, False)
    assert tried[0] == default[0] + module.TRIED_ROWS[name][1]
    assert module.row_key(name, "scifact", data, tried) != module.row_key("default", "scifact", data, default)
    results = {
        "scifact": {
            "default": row("default", [0.5, 0.6, 0.7, 0.8]),
            "st-recipe": row("st-recipe", [0.4, 0.5, 0.6, 0.7]),
            name: row(name, [0.6, 0.7, 0.8, 0.9]),
        }
    }
    module.add_tests(results)
    rows = results["scifact"]
    assert rows[name]["p_vs_st_recipe"] == 0.125 and rows[name]["p_vs_default"] == 0.125
    assert rows["st-recipe"]["p_vs_st_recipe"] is None and rows["default"]["p_vs_st_recipe"] == 0.125
    shots = {
        "trained_on": "scifact",
        "tested_on": "cranfield",
        "rows": {name: {"ndcg@10": 0.4, "delta_vs_base": -0.05}},
    }
    table = module.markdown(results, shots, "python benchmarks/quality.py")
    assert f"| {name} | 0.7500 |" in table and f"- {name} (a lever tried, not the default)" in table
    readme = module.readme_block(results, shots)
    assert name not in readme and "| scifact | **default** | 0.6500 |" in readme


def test_another_start_model_is_in_every_command_in_the_key_and_in_its_own_folder(tmp_path):
    module = quality()
    data = module.DATA / "cranfield"
    model = tmp_path / "all-mpnet-base-v2"
    for name in ("base", "default", "paper", "default-moe-none", "st-recipe"):
        command, _ = module.commands(name, data, tmp_path / name, False, model)
        assert all(part[-2:] == ["--model", str(model)] for part in command[:1]), name
        packaged, _ = module.commands(name, data, tmp_path / name, False)
        assert module.row_key(name, "cranfield@x", data, command) != module.row_key(name, "cranfield", data, packaged)
    assert module.storage_name("cranfield", model) == "cranfield@all-mpnet-base-v2"
    assert module.storage_name("cranfield", None) == "cranfield"
    # nothing cached for that start: nothing runs and nothing is created
    work, cache = tmp_path / "work", tmp_path / "rows"
    assert module.run_row("base", "cranfield", work, cache, quick=False, cached_only=True, model=model) is None
    assert not work.exists()


def test_the_recipes_fp32_row_evaluates_its_model_and_goes_stale_with_it(tmp_path):
    module = quality()
    data = module.DATA / "scifact"
    work, cache = tmp_path / "work", tmp_path / "rows"
    command, _ = module.commands(module.RECIPE_FP32, data, work / "rows" / "scifact" / module.RECIPE_FP32, False)
    assert len(command) == 1 and command[0][-2:] == ["--precision", "fp32"]
    assert str(work / "rows" / "scifact" / "st-recipe" / "model") in command[0]
    # without the st-recipe row there is nothing to evaluate
    assert module.run_row(module.RECIPE_FP32, "scifact", work, cache, quick=False, cached_only=True) is None
    recipe = cache / "scifact" / "st-recipe.json"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(module.json.dumps({"key": "recipe-1"}))
    key = module.row_key(module.RECIPE_FP32, "scifact", data, command, depends_on="recipe-1")
    (cache / "scifact" / f"{module.RECIPE_FP32}.json").write_text(module.json.dumps({**row("x", [0.4]), "key": key}))
    assert module.run_row(module.RECIPE_FP32, "scifact", work, cache, quick=False, cached_only=True)["ndcg@10"] == 0.4
    recipe.write_text(module.json.dumps({"key": "recipe-2"}))  # st-recipe ran again: its fp32 check is stale
    assert module.run_row(module.RECIPE_FP32, "scifact", work, cache, quick=False, cached_only=True) is None


def test_a_rows_load_is_sampled_over_the_row_and_shown_as_such(monkeypatch):
    module = quality()
    loads = iter([1.0, 3.0, 5.0, 7.0, 9.0])
    monkeypatch.setattr(module.os, "getloadavg", lambda: (next(loads, 9.0), 0.0, 0.0))
    with module.LoadSampler(every=0.01) as sampler:
        while len(sampler.samples) < 4:
            pass
    assert sampler.samples[:4] == [1.0, 3.0, 5.0, 7.0]
    assert sampler.mean() == round(sum(sampler.samples) / len(sampler.samples), 2)
    assert module.load_of({"load_mean": 4.0, "load_avg_15min": 2.0}) == "4.0 (mean)"
    assert module.load_of({"load_avg_15min": 2.0}) == "2.0 (end, 15 min)"


def test_mine_and_train_seconds_count_the_refit_training():
    """A --refit row trains twice; its mine+train seconds must hold both trainings (metrics.json's "training"
    seconds are the guarded run's only), or a refit row would look as cheap as the default."""
    module = quality()
    seconds = {"corpus_encoding": 180.0, "mining": 1.5, "training": 1870.0}
    plain = {"seconds": seconds, "training": {"guard": {"chosen": "step 273", "refit": {}}}}
    refit = {"seconds": seconds, "training": {"guard": {"chosen": "step 273", "refit": {"seconds": 2930.0}}}}
    unguarded = {"seconds": seconds, "training": {"guard": {}}}
    assert module.mine_train_seconds(plain) == 2051.5 == module.mine_train_seconds(unguarded)
    assert module.mine_train_seconds(refit) == 4981.5
