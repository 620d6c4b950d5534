"""The command line: documented defaults, one-line errors, and the four subcommands end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clpft.cli import build_parser, main


def subcommand_parsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", ["mine", "train", "eval", "run"])
def test_every_option_is_documented_with_its_default(name):
    """Each option's own help line (as --help prints it) names its default, or says the preset sets it."""
    sub = subcommand_parsers()[name]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        assert action.help, f"{name} {action.option_strings} has no help"
        own_line = " ".join(formatter._expand_help(action).split())
        # a value, the preset's, or (for None) what None means in words: "(default: beside the output)"
        documented = f"(default: {action.default})" in own_line or "(default: from --preset: " in own_line
        documented |= action.default is None and "(default: " in own_line
        assert documented or action.required, f"{name} {action.option_strings}: {own_line!r}"


def test_help_shows_both_presets_defaults():
    text = " ".join(subcommand_parsers()["train"].format_help().split())
    for expected in [
        "(default: clpft)",
        "(default: clp)",
        "(default: intermediate)",
        "parameters that train; the rest stay frozen (default: from --preset: paper moe; clpft all)",
        "tau of InfoNCE and CLP, by what --train-only trains (default: from --preset: paper 0.02; clpft",
        "training epochs (default: from --preset: paper 2; clpft",
    ]:
        assert expected in text
    assert "paper 1e-05; clpft" in text


def test_preset_paper_and_flags_that_override_it():
    from clpft.cli.settings import train_config as _train_config
    from clpft.presets import PRESETS
    from clpft.training import TrainConfig

    parser = build_parser()
    paper = _train_config(parser.parse_args(["train", "--train", "t", "--out", "m", "--preset", "paper"]))
    assert (
        paper.learning_rate,
        paper.batch_size,
        paper.grad_accum,
        paper.temperature,
        paper.penalty_weight,
        paper.epochs,
        paper.moe,
        paper.train_only,
        paper.loss,
    ) == (1e-5, 1, 4, 0.02, 0.1, 2.0, "intermediate", "moe", "clp")
    assert (paper.val_fraction, paper.merge) == (0.0, "none")
    default = _train_config(parser.parse_args(["train", "--train", "t", "--out", "m"]))
    tuned = PRESETS["clpft"]
    assert default.preset == "clpft" and default.train_only == tuned.train_only == "all"
    assert (default.learning_rate, default.temperature) == (tuned.learning_rate["all"], tuned.temperature["all"])
    assert (default.batch_size, default.grad_accum, default.val_fraction, default.merge) == (8, 1, 0.1, "auto")
    moe_only = _train_config(parser.parse_args(["train", "--train", "t", "--out", "m", "--train-only", "moe"]))
    assert (moe_only.learning_rate, moe_only.temperature) == (tuned.learning_rate["moe"], tuned.temperature["moe"])
    mixed = _train_config(
        parser.parse_args(
            ["train", "--train", "t", "--out", "m", "--preset", "paper", "--lr", "3e-4", "--temperature", "0.05"]
        )
    )
    assert (mixed.learning_rate, mixed.temperature, mixed.grad_accum) == (3e-4, 0.05, 4)
    assert TrainConfig(preset="paper", train_only="all").learning_rate == 1e-5
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--train", "t", "--out", "m", "--preset", "fast"])
    from clpft.errors import ClpftError

    with pytest.raises(ClpftError, match="unknown preset 'fast'"):
        TrainConfig(preset="fast")


def test_user_errors_are_one_line(tiny_beir, tmp_path, capsys):
    (tiny_beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "x", "text": "y"}\n{oops\n')
    code = main(["eval", "--data", str(tiny_beir), "--split", "train", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("clpft: error: ") and "corpus.jsonl:2: malformed JSON" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert main(["train", "--train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
    assert main(["eval", "--data", str(tiny_beir), "--model", str(tmp_path / "no-model"), "--quiet"]) == 2


def test_mine_train_eval_with_tiny_model(tiny_model_dir, tiny_beir, tmp_path, capsys):
    train_file = tmp_path / "train.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(tiny_beir),
                "--out",
                str(train_file),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["neg"]) == 2 and len(r["neg_q"]) == 2 for r in rows)
    assert json.loads((tmp_path / "train.jsonl.stats.json").read_text())["negatives"] == 12
    assert main(["mine", "--data", str(tiny_beir), "--out", str(train_file), "--quiet"]) == 2  # exists
    assert "already exists" in capsys.readouterr().err

    model_dir = tmp_path / "model"
    assert (
        main(
            [
                "train",
                "--train",
                str(train_file),
                "--out",
                str(model_dir),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--epochs",
                "1",
                "--lr",
                "1e-3",
                "--quiet",
            ]
        )
        == 0
    )
    assert (model_dir / "modeling_clpft_moe.py").exists() and (model_dir / "training.json").exists()
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\n") and "## Fine-tuned with clpft" in card and "trust_remote_code=True" in card
    assert (model_dir / "training_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    metrics_file = tmp_path / "metrics.json"
    assert (
        main(["eval", "--data", str(tiny_beir), "--model", str(model_dir), "--out", str(metrics_file), "--quiet"]) == 0
    )
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics["metrics"]) == {"ndcg@5", "ndcg@10", "recall@100", "mrr@10", "map"}
    assert set(metrics["per_query"]) == {"q7", "q8"}


def test_console_script_run(tiny_model_dir, tiny_beir, tmp_path):
    """`clpft run` through the installed entry point, on the tiny model."""
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "clpft.cli",
        "run",
        "--data",
        str(tiny_beir),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--num-negatives",
        "2",
        "--epochs",
        "1",
        "--val-fraction",
        "0.34",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nDCG@10" in result.stdout and "fine-tuned" in result.stdout
    assert {"metrics.json", "train.jsonl", "model", "manifest.json", "base_metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["base"]["metrics"]) == set(report["finetuned"]["metrics"])
    # with a validation split, its queries ranked the whole training corpus
    assert report["training"]["val_queries"] == 2 and report["training"]["val_history"]
    card = (out / "model" / "README.md").read_text()
    assert (
        f"| nDCG@10 | {report['base']['metrics']['ndcg@10']:.4f} | {report['finetuned']['metrics']['ndcg@10']:.4f} |"
        in card
    )
    assert card.count("## Fine-tuned with clpft") == 1  # the run writes its section once, with the test metrics
    assert (out / "model" / "training_loss.png").exists()  # with the model, as `clpft train` writes it
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_run_manifest_records_versions_and_checksums(tiny_model_dir, tiny_beir, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--data",
                str(tiny_beir),
                "--out",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--max-steps",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 42 and manifest["config"]["train"]["loss"] == "clp"
    assert manifest["versions"]["torch"] and manifest["versions"]["sentence-transformers"]
    assert len(manifest["data"]) == 4 and all(len(v) == 64 for v in manifest["data"].values())


def test_config_file_sets_options_and_flags_override(tmp_path, capsys):
    from clpft.cli.settings import apply_config as _apply_config

    config = tmp_path / "run.yaml"
    config.write_text("data: /some/data\nout: runs/x\nepochs: 1\nlr: 3.0e-5\nmoe: none\ntrain-only: all\n")
    parser = build_parser()
    argv = ["run", "--config", str(config), "--lr", "1e-4"]
    _apply_config(parser, argv)
    args = parser.parse_args(argv)
    assert (args.data, args.out, args.epochs, args.learning_rate, args.moe, args.train_only) == (
        "/some/data",
        "runs/x",
        1,
        1e-4,
        "none",
        "all",
    )

    config.write_text("data: /some/data\nepochs: [1\n")
    assert main(["run", "--config", str(config)]) == 2
    assert f"{config}:3: not valid YAML (expected ',' or ']'" in capsys.readouterr().err
    config.write_text("data: /some/data\nepochz: 1\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown option 'epochz' for clpft run" in capsys.readouterr().err


def test_same_seed_same_results(tiny_model_dir, tiny_beir, tmp_path):
    reports = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                [
                    "run",
                    "--data",
                    str(tiny_beir),
                    "--out",
                    str(out),
                    "--model",
                    str(tiny_model_dir),
                    "--num-negatives",
                    "2",
                    "--epochs",
                    "1",
                    "--lr",
                    "1e-3",
                    "--quiet",
                ]
            )
            == 0
        )
        reports.append(json.loads((out / "metrics.json").read_text()))
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()
    assert reports[0]["finetuned"]["per_query"] == reports[1]["finetuned"]["per_query"]
    assert [h["loss"] for h in reports[0]["training"]["loss_history"]] == [
        h["loss"] for h in reports[1]["training"]["loss_history"]
    ]


REQUIRED = {
    "mine": ["--data", "d", "--out", "o"],
    "train": ["--train", "t", "--out", "o"],
    "eval": ["--data", "d"],
    "run": ["--data", "d", "--out", "o"],
    "synth": ["--data", "d", "--out", "o"],
    "ablation": ["--data", "d", "--out", "o"],
}


def out_of_range(rule) -> str:
    """A value just outside ``rule`` (clpft.options.Range)."""
    if rule.low is not None:
        value = rule.low if rule.low_open else rule.low - (1 if rule.integer else 0.5)
        while value in rule.also:
            value -= 1
    else:
        value = rule.high if rule.high_open else rule.high + 1
    return str(int(value)) if rule.integer else str(value)


def numeric_options():
    """(subcommand, flag, destination) of every option that takes a number, on every subcommand."""
    found = []
    for name, sub in subcommand_parsers().items():
        for action in sub._actions:
            if action.option_strings and action.type in (int, float):
                found.append((name, action.option_strings[0], action.dest))
    return found


@pytest.mark.parametrize("command,flag,dest", numeric_options())
def test_every_numeric_option_out_of_range_is_one_line_before_any_work(command, flag, dest, monkeypatch, capsys):
    from clpft.options import FIELD_OF_FLAG, ranges

    rule = ranges().get(FIELD_OF_FLAG.get(dest, dest))
    assert rule is not None, f"clpft {command} {flag} takes a number but has no range (option(..., range=) or RANGES)"

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr("clpft.models.load_model", no_work)
    monkeypatch.setattr("clpft.data.load_dataset", no_work)
    code = main([command, *REQUIRED[command], flag, out_of_range(rule)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"clpft: error: {flag} "), err


@pytest.mark.parametrize(
    "extra", [["--rank-from", "5", "--rank-to", "5"], ["--num-experts", "2", "--experts-per-token", "3"]]
)
def test_options_that_limit_each_other(extra, capsys):
    assert main(["run", "--data", "d", "--out", "o", *extra]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_option_fails_before_torch_is_even_imported(tmp_path):
    """`clpft run --data ../shared/data/scifact --out X --penalty-weight 1.5`: one line, exit 2, and not even
    torch imported, let alone a model loaded (so it takes a fraction of a second)."""
    script = (
        "import sys; from clpft.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "run",
            "--data",
            "../shared/data/scifact",
            "--out",
            str(tmp_path / "x"),
            "--penalty-weight",
            "1.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "clpft: error: --penalty-weight must be in [0, 1], got 1.5"
    assert not (tmp_path / "x").exists()


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--train", "t", "--out", "o", "--batch-size", "abc"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clpft: error: clpft train: argument --batch-size: invalid int value: 'abc'"
    ]


def test_quiet_draws_no_progress_bar(mined, tiny_model_dir, tmp_path, capfd):
    """--quiet through the libraries' own switches: no bar from transformers, datasets, huggingface_hub,
    sentence-transformers' trainer or its model card (the widget-examples scan is skipped)."""
    from clpft.cli import main

    out = tmp_path / "model"
    argv = ["train", "--train", str(mined), "--out", str(out), "--model", str(tiny_model_dir), "--quiet"]
    assert main(argv + ["--num-negatives", "2", "--max-steps", "2", "--val-fraction", "0"]) == 0
    captured = capfd.readouterr()
    for bar in ("it/s", "s/it", "example/s", "|█", "Computing widget examples", "Writing model shards"):
        assert bar not in captured.err + captured.out, bar
    assert (out / "training.json").is_file()


def test_run_is_mine_then_train_then_eval(tiny_model_dir, tiny_beir, tmp_path):
    """`clpft run` composes the same stages `clpft mine|train|eval` run: the same training file byte for byte,
    the same weights and the same test metrics (the guard on a fixed schedule, so both evaluate the same steps)."""
    model = ["--model", str(tiny_model_dir), "--num-negatives", "2", "--quiet"]
    training = ["--max-steps", "3", "--eval-steps", "1", "--batch-size", "2"]
    run, alone = tmp_path / "run", tmp_path / "alone"
    assert main(["run", "--data", str(tiny_beir), "--out", str(run), *model, *training]) == 0
    alone.mkdir()
    assert main(["mine", "--data", str(tiny_beir), "--out", str(alone / "train.jsonl"), *model]) == 0
    train = ["train", "--train", str(alone / "train.jsonl"), "--out", str(alone / "model"), "--val-corpus"]
    assert main([*train, str(tiny_beir), *model, *training]) == 0
    evaluate = ["eval", "--data", str(tiny_beir), "--model", str(alone / "model"), "--out", str(alone / "m.json")]
    assert main([*evaluate, "--quiet"]) == 0

    assert (run / "train.jsonl").read_bytes() == (alone / "train.jsonl").read_bytes()
    stats = [json.loads(p.read_text()) for p in (run / "train.jsonl.stats.json", alone / "train.jsonl.stats.json")]
    for one in stats:
        one.pop("seconds")  # the only field that differs: how long mining took
    assert stats[0] == stats[1]  # one schema, the same values
    assert (run / "model" / "model.safetensors").read_bytes() == (alone / "model" / "model.safetensors").read_bytes()
    for name in ("training.json", "training_loss.png"):
        assert (run / "model" / name).is_file() and (alone / "model" / name).is_file()
    tuned = json.loads((run / "metrics.json").read_text())["finetuned"]["metrics"]
    assert tuned == json.loads((alone / "m.json").read_text())["metrics"]


def test_every_choice_is_checked_where_it_is_declared_for_the_python_api_too():
    """A Literal field holds one of its values, or the dataclass refuses it in one line naming the flag."""
    import typing

    from clpft.errors import ClpftError
    from clpft.options import MiningOptions, TrainConfig, choices_of

    checked = 0
    for cls in (TrainConfig, MiningOptions):
        for name, kind in typing.get_type_hints(cls).items():
            if not choices_of(kind):
                continue
            with pytest.raises(ClpftError, match=r"must be one of .*, got 'bogus'$"):
                cls(**{name: "bogus"})
            checked += 1
    assert checked >= 6  # loss, moe, train_only, precision, select, strategy


def test_run_metrics_count_the_refit_training_in_their_seconds(tiny_model_dir, tiny_beir, tmp_path):
    """metrics.json's seconds name --refit's second training on its own ("training" is the guarded run's):
    a reader summing them gets the whole training cost."""
    out = tmp_path / "run"
    argv = ["run", "--data", str(tiny_beir), "--out", str(out), "--model", str(tiny_model_dir), "--quiet"]
    flags = [
        "--num-negatives",
        "2",
        "--val-fraction",
        "0.5",
        "--select",
        "best",
        "--refit",
        "--lr",
        "1e-3",
        "--epochs",
        "2",
    ]
    assert main([*argv, *flags, "--batch-size", "4", "--precision", "fp32"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    refit = metrics["training"]["guard"].get("refit") or {}
    assert metrics["seconds"]["refit"] == refit.get("seconds", 0.0)
    # lr 1e-3 moves the tiny model enough that the guard saves a trained step, so the refit runs
    assert metrics["training"]["guard"]["chosen"] != "start"
    assert refit["steps"] > 0 and metrics["seconds"]["refit"] > 0
