"""Killed at any moment, `--resume` finishes: complete checkpoints only, and the fault-injection harness
(benchmarks/fault_injection.py) in a small form; every kill point and random moments under -m slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clpft.cli import main
from clpft.training.checkpoints import MARKER, incomplete_reason, last_complete_checkpoint, mark_complete, rotate
from conftest import SHARED_DATA, load_benchmark


def harness():
    return load_benchmark("fault_injection")


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        mark_complete(folder)
    return folder


def test_only_complete_checkpoints_count(tmp_path):
    two, four, six = (fake_checkpoint(tmp_path, s, complete=s != 6) for s in (2, 4, 6))
    assert incomplete_reason(four) is None
    assert "no completion marker" in incomplete_reason(six)
    (four / "model.safetensors").write_bytes(b"w" * 10)  # cut short after the marker was written
    assert incomplete_reason(four) == "model.safetensors has 10 of 100 bytes"
    (two / "trainer_state.json").unlink()
    assert incomplete_reason(two) == "trainer_state.json is missing"
    (two / MARKER).write_text("{not json")
    assert incomplete_reason(two) == "its completion marker is unreadable"
    assert last_complete_checkpoint(tmp_path) == (
        None,
        [(six, incomplete_reason(six)), (four, incomplete_reason(four)), (two, incomplete_reason(two))],
    )


def test_rotation_keeps_complete_checkpoints_and_ignores_incomplete_ones(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 3, complete=False)  # a crash's leftover between complete ones
    fake_checkpoint(tmp_path, 8, complete=False)  # being written now
    rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]


def test_a_checkpoint_killed_while_written_is_skipped_on_resume(mined, tiny_model_dir, tmp_path):
    """The issue's scenario: killed as soon as checkpoint-2 appears, while the trainer is still writing it."""
    args = [
        "train",
        "--train",
        str(mined),
        "--model",
        str(tiny_model_dir),
        "--num-negatives",
        "2",
        "--epochs",
        "2",
        "--save-steps",
        "2",
        "--grad-accum",
        "1",
        "--batch-size",
        "1",
        "--val-fraction",
        "0",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "M"
    env = {**os.environ, "CLPFT_KILL_AT": "checkpoint.model_written:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "clpft.cli", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    half = tmp_path / "M.checkpoints" / "checkpoint-2"
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "clpft.cli", *args, "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipping {half}: no completion marker (the run stopped while writing it); removed" in resumed.stdout
    assert json.loads((out / "training.json").read_text())["optimizer_steps"] == 12
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert not (tmp_path / "M.checkpoints").exists()
    # a second --resume finds the finished model and says so
    assert main([*args, "--out", str(out), "--resume"]) == 0


def test_harness_small_form(tmp_path):
    """`clpft run` killed at 3 points (mid-checkpoint, the final model save, the fine-tuned evaluation); `clpft
    run --overwrite` over a finished run killed before its report and interrupted with SIGINT; two `clpft mine`
    processes on one output."""
    rows = harness().harness(tmp_path, quick=True, random_kills=0, seed=0)
    assert [r["scenario"] for r in rows] == ["run"] * 3 + ["run --overwrite"] * 2 + ["two processes: mine"]
    for row in rows:
        assert row["survived"], row


@pytest.mark.slow
def test_harness_every_kill_point_and_random_moments(tmp_path):
    rows = harness().harness(tmp_path, quick=False, random_kills=6, seed=0)
    assert len(rows) >= 20
    killed = [r for r in rows if r["killed"]]
    assert len(killed) >= 20 and all(r["survived"] for r in killed), [r for r in killed if not r["survived"]]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cranfield").exists(), reason="shared datasets not present")
def test_the_issue_scenario_on_cranfield_with_the_packaged_model(tmp_path):
    train = tmp_path / "T.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(SHARED_DATA / "cranfield"),
                "--out",
                str(train),
                "--max-train-queries",
                "40",
                "--passage-max-tokens",
                "64",
                "--quiet",
            ]
        )
        == 0
    )
    args = [
        "train",
        "--train",
        str(train),
        "--out",
        str(tmp_path / "M"),
        "--epochs",
        "2",
        "--save-steps",
        "2",
        "--passage-max-tokens",
        "64",
        "--quiet",
    ]
    env = {**os.environ, "CLPFT_KILL_AT": "checkpoint.model_written:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "clpft.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert killed.returncode == -9
    resumed = subprocess.run(
        [sys.executable, "-m", "clpft.cli", *args, "--resume"], capture_output=True, text=True, timeout=1800
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipping" in resumed.stdout and (tmp_path / "M" / "model.safetensors").is_file()
