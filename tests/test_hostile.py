"""What a hostile user tries: overwrite and resume in the wrong order, two processes on one output, config
values of the wrong kind, other inputs under --resume, damaged model folders. Nothing is lost, nothing is
silently wrong, and every mistake gets one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clpft.cli import main

SMALL = ["--num-negatives", "2", "--max-steps", "1", "--quiet"]


def _run(data: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["run", "--data", str(data), "--out", str(out), "--model", str(model), *SMALL, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_overwrite_leaves_the_old_run_and_resume_refuses_the_new_options(
    tiny_model_dir, tiny_beir, tmp_path, monkeypatch, capsys
):
    """Ctrl-C during `run --overwrite --lr 1e-4`, then `run --resume --lr 1e-4`: the old run is there as it
    was, and the resume does not pass the old model off as the new run (it evaluated it before)."""
    from clpft.cli import stages

    out = tmp_path / "run"
    assert _run(tiny_beir, out, tiny_model_dir) == 0
    before = _files(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "train", interrupted)
    assert _run(tiny_beir, out, tiny_model_dir, "--overwrite", "--lr", "1e-4") == 130
    assert _files(out) == before
    assert not out.with_name(".run.replaced").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert _run(tiny_beir, out, tiny_model_dir, "--resume", "--lr", "1e-4") == 2
    error = capsys.readouterr().err.strip()
    assert "holds a different run" in error and "train.learning_rate" in error and len(error.splitlines()) == 1


def test_an_overwrite_checks_everything_before_it_touches_the_old_run(tiny_model_dir, tiny_beir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(tiny_beir, out, tiny_model_dir) == 0
    before = _files(out)
    assert _run(tiny_beir, out, tiny_model_dir, "--overwrite", "--train-split", "test", "--eval-split", "test") == 2
    assert "must differ" in capsys.readouterr().err
    assert _files(out) == before
    missing_model = tmp_path / "no-such-model"
    assert main(["run", "--data", str(tiny_beir), "--out", str(out), "--model", str(missing_model), "--overwrite"]) == 2
    assert _files(out) == before


def test_a_second_process_on_the_same_output_is_refused(tiny_beir, tmp_path, capsys):
    """A live process holds the lock: refused, naming it. A dead one's lock is stale: taken over."""
    out = tmp_path / "train.jsonl"
    lock = tmp_path / ".train.jsonl.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid}\n")
        argv = ["mine", "--data", str(tiny_beir), "--out", str(out), "--strategy", "random", "--quiet"]
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert f"being written by process {holder.pid}" in error and len(error.splitlines()) == 1
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the holder is gone: its lock is stale
    assert out.is_file() and not lock.exists()


@pytest.mark.parametrize(
    "yaml_text,problem",
    [
        ('overwrite: "false"\n', "overwrite must be true or false, got 'false'"),
        ("seed: 1\nprecision: bogus\n", ":2: precision must be one of auto, fp32, bf16, fp16, got 'bogus'"),
        ("num-negatives: many\n", ":1: num-negatives must be a whole number, got 'many'"),
    ],
)
def test_config_values_are_checked_as_the_command_line_checks_them(tiny_beir, tmp_path, capsys, yaml_text, problem):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "train.jsonl"
    out.write_text("an earlier output\n")
    argv = ["mine", "--data", str(tiny_beir), "--out", str(out), "--config", str(config), "--strategy", "random"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert problem in error and len(error.splitlines()) == 1
    assert out.read_text() == "an earlier output\n"


def test_a_config_flag_and_its_negative_spelling_say_the_same(tmp_path):
    from clpft.cli.parser import build_parser
    from clpft.cli.settings import apply_config

    for text in ("guard: false\n", "no-guard: true\n"):
        config = tmp_path / "c.yaml"
        config.write_text(text)
        argv = ["train", "--train", "t.jsonl", "--out", "m", "--config", str(config)]
        parser = build_parser()
        apply_config(parser, argv)
        assert parser.parse_args(argv).guard is False


def test_resume_cleans_only_its_own_outputs_temporaries(tiny_model_dir, mined, tmp_path):
    folder = mined.parent
    argv = ["train", "--train", str(mined), "--out", str(folder / "m"), "--model", str(tiny_model_dir), *SMALL]
    assert main(argv) == 0
    others = [folder / ".m2.abc.tmp", folder / ".metrics.json.x1.tmp", folder / ".m2.old"]
    for path in others:
        path.write_text("another output's")
    own = folder / ".m.x9.tmp"
    own.write_text("this output's")
    assert main([*argv, "--resume"]) == 0  # already finished: it only cleans up
    assert all(path.exists() for path in others) and not own.exists()


def test_train_resume_refuses_other_inputs(tiny_model_dir, mined, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["train", "--train", str(mined), "--out", str(out), "--model", str(tiny_model_dir), *SMALL]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0  # the same inputs: already finished
    assert "already finished" in capsys.readouterr().out
    assert main([*argv, "--resume", "--lr", "1e-3"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text("{not json\n")
    assert main([*argv[:2], str(other), *argv[3:], "--resume"]) == 2
    assert "train_file_sha256" in capsys.readouterr().err


def test_run_resume_notices_edited_data(tiny_model_dir, tiny_beir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(tiny_beir, out, tiny_model_dir) == 0
    qrels = tiny_beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("q8\td8\t1", "q8\td8\t2"))
    capsys.readouterr()
    assert _run(tiny_beir, out, tiny_model_dir, "--resume") == 2
    assert "data.qrels/test.tsv" in capsys.readouterr().err


@pytest.fixture
def saved_model(tiny_model_dir, tmp_path) -> Path:
    from clpft.models import load_model, save_model

    return save_model(load_model(tiny_model_dir), tmp_path / "saved")


@pytest.mark.parametrize(
    "removed,problem",
    [
        ("tokenizer.json", "its tokenizer knows 5 tokens but the model embeds"),
        ("config.json", "config.json is missing"),
        ("1_Pooling/config.json", "1_Pooling/config.json is missing"),
    ],
)
def test_a_damaged_model_folder_is_one_line(saved_model, tiny_beir, removed, problem, capsys):
    (saved_model / removed).unlink()
    assert main(["eval", "--data", str(tiny_beir), "--model", str(saved_model), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert problem in error and len(error.splitlines()) == 1


def test_saved_model_files_all_get_the_usual_permissions(saved_model):
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in saved_model.rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~mask
    assert set(modes.values()) == {0o666 & ~mask}


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["train", "--train", "{mined}", "--lr", "inf"], "must be a finite number"),
        (["eval", "--top-k", "2"], "at least 100"),
        (["mine", "--strategy", "random", "--out", "{folder}"], "is a folder; this command writes a file"),
        (["run", "--out", "{file}"], "is a file; this command writes a folder"),
    ],
)
def test_bad_options_are_one_line_before_any_work(tiny_beir, mined, tmp_path, capsys, argv, problem):
    folder, file = tmp_path / "a-folder", tmp_path / "a-file"
    folder.mkdir()
    file.write_text("x")
    values = {"mined": str(mined), "folder": str(folder), "file": str(file)}
    argv = [part.format(**values) for part in argv]
    if argv[0] != "train":
        argv += ["--data", str(tiny_beir)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors (the type checks) exit 2 with its usage line
        code = exit.code
    assert code == 2
    assert problem in capsys.readouterr().err


def test_synth_names_its_own_flag(tiny_beir, tmp_path, capsys):
    assert main(["synth", "--data", str(tiny_beir), "--out", str(tmp_path / "s"), "--backends", "gpt"]) == 2
    assert "--backends: unknown backend gpt" in capsys.readouterr().err


def test_a_read_only_folder_is_called_what_it_is(tmp_path, monkeypatch):
    from clpft import files
    from clpft.errors import ClpftError

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(files.os, "access", lambda *args: False)
    monkeypatch.setattr(files.os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(ClpftError, match="read-only file system"):
        files.write_text(tmp_path / "x.json", "{}")
