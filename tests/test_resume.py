"""Reliability: a training run killed with SIGKILL resumes from its last checkpoint and ends with the
same weights as an uninterrupted run; a NaN loss stops training with one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from clpft.cli import main
from clpft.errors import ClpftError
from clpft.training import TrainConfig, train_model

KILL_AFTER_STEP = """
import os, signal, sys
from transformers import TrainerCallback
import clpft.training.trainer as trainer_module
step = int(os.environ["KILL_AT"])
original = trainer_module.trainer_classes
def patched():
    trainer, callback, guard = original()
    class Killer(trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            outer = self
            class Kill(TrainerCallback):
                def on_save(self, args, state, control, **kw):
                    if state.global_step >= step:
                        os.kill(os.getpid(), signal.SIGKILL)  # like kill -9, right after a checkpoint
            self.add_callback(Kill())
    return Killer, callback, guard
trainer_module.trainer_classes = patched
from clpft.cli import main
sys.exit(main(sys.argv[1:]))
"""


def train_args(mined, tiny_model_dir, out):
    return [
        "train",
        "--train",
        str(mined),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--num-negatives",
        "2",
        "--epochs",
        "3",
        "--grad-accum",
        "1",
        "--batch-size",
        "1",
        "--val-fraction",
        "0",
        "--lr",
        "1e-3",
        "--save-steps",
        "4",
        "--quiet",
    ]


def test_killed_training_resumes_to_the_same_weights(mined, tiny_model_dir, tmp_path):
    straight = tmp_path / "straight"
    assert main(train_args(mined, tiny_model_dir, straight)) == 0
    steps = json.loads((straight / "training.json").read_text())["optimizer_steps"]
    assert steps == 18  # 6 queries x 3 epochs, batch 1, no accumulation

    resumed = tmp_path / "resumed"
    env = {**os.environ, "KILL_AT": "8"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_STEP, *train_args(mined, tiny_model_dir, resumed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not resumed.exists()  # no half-written model
    assert (tmp_path / "resumed.checkpoints" / "checkpoint-8").is_dir()
    assert main([*train_args(mined, tiny_model_dir, resumed), "--resume"]) == 0
    assert json.loads((resumed / "training.json").read_text())["optimizer_steps"] == steps
    assert not (tmp_path / "resumed.checkpoints").exists()
    a = load_file(straight / "model.safetensors")
    b = load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst


def test_resume_without_checkpoints_is_a_clear_error(mined, tiny_model_dir, tmp_path, capsys):
    assert main([*train_args(mined, tiny_model_dir, tmp_path / "m"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_nan_loss_stops_training(tiny_model):
    from clpft.data import TrainExample

    examples = [TrainExample(f"what is protein {i}", ["protein cell"], ["cancer risk"], [[]]) for i in range(4)]
    with torch.no_grad():
        next(tiny_model.parameters()).fill_(float("nan"))
    with pytest.raises(ClpftError, match=r"the loss became nan at step 1"):
        train_model(tiny_model, examples, TrainConfig(num_negatives=1, grad_accum=1), show_progress=False)


def test_run_resume_reuses_finished_stages(tiny_model_dir, tiny_beir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
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
        "--quiet",
    ]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0
    assert "is already finished" in capsys.readouterr().out
    # as if it had died during training: the mined set and base metrics are kept, the rest redone
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    shutil.rmtree(out / "model")
    (out / "metrics.json").unlink()
    assert main([*args, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert (
        (out / "train.jsonl").stat().st_mtime_ns == stamp
        and (out / "model").is_dir()
        and (out / "metrics.json").exists()
    )
    assert main(args) == 2  # without --resume or --overwrite an existing run is never touched
    # --resume into a folder that holds a different run: refused, nothing in it touched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*args, "--resume", "--lr", "3e-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a different run" in err and "train.learning_rate" in err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
