"""CLPLoss under DDP: two CPU processes on the gloo backend, each with half of a global batch, give the
single-process loss on the whole batch (queries see every process's positives and negatives)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clpft.losses import CLPLoss

B, K, M, D = 3, 2, 2, 8  # per process: queries, negatives per query, own queries per negative, dim


def half(rank: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Process ``rank``'s part: embeddings [queries, positives, negatives_1..K], own-query embeddings, labels."""
    g = torch.Generator().manual_seed(100 + rank)
    columns = [torch.randn(B, D, generator=g) for _ in range(2 + K)]
    neg_queries = torch.randn(5, D, generator=g)
    labels = torch.randint(-1, 5, (B, K, M), generator=g)
    if rank == 1:
        labels[:] = -1  # a process without any known negative must still take part
        labels[0, 0, 0] = 3
    return columns, neg_queries, labels


def whole() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    parts = [half(r) for r in range(2)]
    columns = [torch.cat([p[0][c] for p in parts]) for c in range(2 + K)]
    neg_queries = torch.cat([p[1] for p in parts])
    second = parts[1][2].clone()
    second[second >= 0] += len(parts[0][1])  # own-query rows of process 1 follow those of process 0
    return columns, neg_queries, torch.cat([parts[0][2], second])


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        columns, neg_queries, labels = half(rank)
        queries = columns[0].clone().requires_grad_(True)
        loss = CLPLoss(model=None, penalty_weight=0.3, temperature=0.05).compute_loss_from_embeddings(
            [queries, *columns[1:]], neg_queries, labels)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": queries.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo needed")
def test_two_process_loss_equals_single_process_loss(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    columns, neg_queries, labels = whole()
    queries = columns[0].clone().requires_grad_(True)
    single = CLPLoss(model=None, penalty_weight=0.3, temperature=0.05).compute_loss_from_embeddings(
        [queries, *columns[1:]], neg_queries, labels)
    single.backward()

    distributed = (results[0]["loss"] + results[1]["loss"]) / 2  # what DDP's gradient averaging optimises
    assert torch.allclose(distributed, single.detach(), atol=1e-6), (distributed, single)
    # each query's gradient, averaged over the processes as DDP does, is the single-process gradient
    assert torch.allclose(torch.cat([results[0]["grad"], results[1]["grad"]]) / 2, queries.grad, atol=1e-6)
    assert os.environ.get("RANK") is None  # nothing leaked into this process


def test_clpft_train_under_torchrun(tiny_model_dir, tiny_beir, tmp_path):
    """`torchrun --nproc_per_node 2 -m clpft.cli train` on CPU (gloo): DDP training, one model written."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from clpft.cli import main

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    train = tmp_path / "train.jsonl"
    assert main(["mine", "--data", str(tiny_beir), "--out", str(train), "--model", str(tiny_model_dir),
                 "--num-negatives", "2", "--quiet"]) == 0
    out = tmp_path / "model"
    result = subprocess.run(
        [str(torchrun if torchrun.exists() else shutil.which("torchrun")), "--nproc_per_node", "2",
         f"--master_port={_free_port()}", "-m", "clpft.cli", "train", "--train", str(train), "--model", str(tiny_model_dir),
         "--out", str(out), "--num-negatives", "2", "--batch-size", "2", "--grad-accum", "1", "--max-steps", "2", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    training = json.loads((out / "training.json").read_text())
    assert training["world_size"] == 2 and training["optimizer_steps"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no second, half-written copy
