"""What users lose runs to: a full disk, an unwritable folder, secrets leaking into files; plus the
validation curve and the MTEB hand-off. Every failure is one line on stderr, exit code 2, and nothing
that existed before is damaged."""

from __future__ import annotations

import errno
import json
import os
import sys
import types

import pytest

import clpft.files
from clpft.cli import main
from clpft.data import read_train_jsonl
from clpft.errors import ClpftError
from clpft.manifest import build_manifest
from clpft.training.validation import split_validation

SECRET = "sk-reliability-secret-987654"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("clpft: error: "), err
    assert "Traceback" not in err
    return err


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tiny_model_dir, tiny_beir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results" / "metrics.json"
    out.parent.mkdir()
    out.write_text('{"old": true}\n')

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(clpft.files.os, "replace", no_space)
    code = main(
        ["eval", "--data", str(tiny_beir), "--model", str(tiny_model_dir), "--out", str(out), "--overwrite", "--quiet"]
    )
    assert code == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and str(out) in err
    assert out.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]  # the temporary file is gone


def test_disk_full_while_saving_a_model_keeps_the_old_model(tiny_model_dir, tiny_beir, tmp_path, monkeypatch, capsys):
    train = tmp_path / "train.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(tiny_beir),
                "--out",
                str(train),
                "--model",
                str(tiny_model_dir),
                "--quiet",
                "--num-negatives",
                "2",
            ]
        )
        == 0
    )
    model = tmp_path / "model"
    args = [
        "train",
        "--train",
        str(train),
        "--out",
        str(model),
        "--model",
        str(tiny_model_dir),
        "--num-negatives",
        "2",
        "--max-steps",
        "1",
        "--quiet",
    ]
    assert main(args) == 0
    before = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    from sentence_transformers import SentenceTransformer

    real_save = SentenceTransformer.save

    def full_half_way(self, path, *a, **k):
        real_save(self, path, *a, **k)
        # as if the disk filled up while the weights were written: a truncated file, then ENOSPC
        weights = next(__import__("pathlib").Path(path).glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SentenceTransformer, "save", full_half_way)
    assert main([*args, "--overwrite"]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert before == {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-written folder left


def test_permission_errors_are_one_line(tiny_model_dir, tiny_beir, tmp_path, monkeypatch, capsys):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/models/out")

    monkeypatch.setattr("clpft.models.save_model", denied)
    train = tmp_path / "train.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(tiny_beir),
                "--out",
                str(train),
                "--model",
                str(tiny_model_dir),
                "--quiet",
                "--num-negatives",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--out",
                str(tmp_path / "m"),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--max-steps",
                "1",
                "--quiet",
            ]
        )
        == 2
    )
    assert one_line_error(capsys) == "clpft: error: /srv/models/out: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder(tiny_model_dir, tiny_beir, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert (
            main(
                [
                    "eval",
                    "--data",
                    str(tiny_beir),
                    "--model",
                    str(tiny_model_dir),
                    "--out",
                    str(folder / "m.json"),
                    "--quiet",
                ]
            )
            == 2
        )
        assert "permission denied" in one_line_error(capsys).lower()
    finally:
        folder.chmod(0o755)


def test_unwritable_folder_check(tmp_path, monkeypatch):
    # The check root would skip above, exercised directly: a folder the process may not write into.
    monkeypatch.setattr(clpft.files.os, "access", lambda path, mode: False)
    with pytest.raises(ClpftError, match="cannot write to .*: permission denied"):
        clpft.files.write_json(tmp_path / "x.json", {})
    assert not (tmp_path / "x.json").exists()


def test_output_already_there_is_never_replaced_without_overwrite(tiny_model_dir, tiny_beir, tmp_path, capsys):
    for command, out in (("mine", tmp_path / "train.jsonl"), ("eval", tmp_path / "m.json")):
        out.write_text("precious\n")
        extra = ["--model", str(tiny_model_dir)]
        assert main([command, "--data", str(tiny_beir), "--out", str(out), *extra, "--quiet"]) == 2
        assert "already exists" in one_line_error(capsys) and out.read_text() == "precious\n"


def test_secrets_are_redacted_from_errors_logs_and_manifests(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLPFT_API_KEY", SECRET)
    # an error that would echo the key (e.g. an endpoint URL carrying it) prints it redacted
    assert main(["eval", "--data", str(tmp_path / f"data-{SECRET}"), "--out", str(tmp_path / "m.json")]) == 2
    err = one_line_error(capsys)
    assert SECRET not in err and "***" in err
    monkeypatch.setattr(sys, "argv", ["clpft", "run", "--llm-base-url", f"https://host/v1?key={SECRET}"])
    manifest = build_manifest({"neg_queries": {"llm_base_url": f"https://host/v1?key={SECRET}"}}, [], 42)
    assert SECRET not in json.dumps(manifest) and "***" in manifest["command"]


def test_validation_split_and_curve(tiny_model_dir, tiny_beir, tmp_path):
    train = tmp_path / "train.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(tiny_beir),
                "--out",
                str(train),
                "--model",
                str(tiny_model_dir),
                "--quiet",
                "--num-negatives",
                "2",
            ]
        )
        == 0
    )
    examples = read_train_jsonl(train)
    kept, held = split_validation(examples, 0.34, seed=1)
    assert {e.query_id for e in kept}.isdisjoint({e.query_id for e in held}) and len(kept) + len(held) == len(examples)
    assert [e.query_id for e in held] == [e.query_id for e in split_validation(examples, 0.34, seed=1)[1]]
    with pytest.raises(ClpftError, match="--val-fraction"):
        split_validation(examples, 1.0, seed=1)

    out = tmp_path / "model"
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--out",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--epochs",
                "2",
                "--grad-accum",
                "1",
                "--lr",
                "1e-3",
                "--val-fraction",
                "0.34",
                "--eval-steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads((out / "training.json").read_text())
    assert result["val_queries"] == len(held) and result["examples"] == len(kept)
    curve = result["val_history"]
    # step 0 (the untouched model), every --eval-steps, and the end
    assert [v["step"] for v in curve] == [0] + list(range(2, result["optimizer_steps"] + 1, 2)) + (
        [result["optimizer_steps"]] if result["optimizer_steps"] % 2 else []
    )
    assert all(0.0 <= v["ndcg@10"] <= 1.0 for v in curve)
    assert (out / "training_loss.png").read_bytes()[:4] == b"\x89PNG"

    # --val-corpus: the held-out queries rank the whole corpus (12 documents), not their pool (5 or so)
    from clpft.training.validation import ValidationRanking

    corpus = {f"d{i}": f"document {i}" for i in range(1, 13)}
    assert len(ValidationRanking(held, corpus).corpus) == 12
    assert len(ValidationRanking(held).corpus) < 12
    with pytest.raises(ClpftError, match="not in it"):
        ValidationRanking(held, {"d99": "elsewhere"})
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--out",
                str(tmp_path / "m2"),
                "--model",
                str(tiny_model_dir),
                "--num-negatives",
                "2",
                "--epochs",
                "1",
                "--grad-accum",
                "1",
                "--val-fraction",
                "0.34",
                "--val-corpus",
                str(tiny_beir),
                "--quiet",
            ]
        )
        == 0
    )
    whole = json.loads((tmp_path / "m2" / "training.json").read_text())["val_history"]
    assert whole and all(0.0 <= v["ndcg@10"] <= 1.0 for v in whole)


def test_mteb_hand_off(tiny_model_dir, tmp_path, monkeypatch, capsys):
    seen = {}

    class Task:
        def __init__(self, name):
            self.metadata = types.SimpleNamespace(name=name)

    class Result:
        task_name = "SciFact"
        scores = {"test": [{"main_score": 0.5}]}

        def get_score(self):
            return 0.5

    def evaluate(model, tasks):
        seen["model"], seen["tasks"] = model, tasks
        seen["embedding"] = model.encode(["a query"])
        return types.SimpleNamespace(task_results=[Result()])

    fake = types.SimpleNamespace(get_tasks=lambda tasks: [Task(t) for t in tasks if t == "SciFact"], evaluate=evaluate)
    monkeypatch.setitem(sys.modules, "mteb", fake)
    out = tmp_path / "m.json"
    assert main(["eval", "--mteb", "SciFact", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["mteb"] == {
        "SciFact": {"main_score": 0.5, "scores": {"test": [{"main_score": 0.5}]}}
    }
    assert type(seen["model"]).__name__ == "SentenceTransformer" and seen["embedding"].shape[0] == 1
    assert "MTEB SciFact: main score 0.5000" in capsys.readouterr().out
    assert main(["eval", "--mteb", "NoSuchTask", "--model", str(tiny_model_dir), "--quiet"]) == 2
    assert "unknown task NoSuchTask" in one_line_error(capsys)
    monkeypatch.setitem(sys.modules, "mteb", None)  # not installed
    assert main(["eval", "--mteb", "SciFact", "--model", str(tiny_model_dir), "--quiet"]) == 2
    assert "pip install mteb" in one_line_error(capsys)


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        clpft.files.write_json(tmp_path / "a.json", {})
        with clpft.files.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path, capsys):
    """A model folder whose weights are only a pickle (pytorch_model.bin) is not loaded: safetensors only."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    assert main(["eval", "--mteb", "SciFact", "--model", str(folder), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "could not load model" in err
