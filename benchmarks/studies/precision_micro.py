"""bf16 autocast against fp32 on this CPU, in one process: encoding 256 SciFact passages (256 tokens) and one
training step of 8 queries + 40 passages (an MNRL-style loss, no trainer), each timed after a warm-up.

    python benchmarks/studies/precision_micro.py

Runs on 2026-12-02 (this project's 2-core machine): encoding 10.55 s fp32 against 4.48 s bf16 (2.35x), then
10.57 s against 5.12 s (2.06x), the embeddings' cosine 0.99998; a training step 9.56 s fp32 against 5.12 s
bf16, then 7.19 s against 4.37 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clpft.models import load_model

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def main() -> None:
    with CORPUS.open(encoding="utf-8") as handle:
        docs = [json.loads(line) for _, line in zip(range(256), handle)]
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in docs]
    model = load_model(None)
    model.max_seq_length = 256

    def encode() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        embeddings = model.encode(texts, batch_size=64)
        return time.perf_counter() - started, embeddings

    encode()  # warm-up
    fp32_seconds, fp32 = encode()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encode()
        bf16_seconds, bf16 = encode()
    cosine = float((fp32 * bf16).sum(1).mean() / np.linalg.norm(bf16, axis=1).mean())
    print(
        f"encode: fp32 {fp32_seconds:.2f} s, bf16 {bf16_seconds:.2f} s, ratio {fp32_seconds / bf16_seconds:.2f}, "
        f"cosine {cosine:.5f}"
    )

    passages = model.tokenize(texts[:40])
    queries = model.tokenize(["what is the effect of x on y in cells"] * 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()

    def step(bf16_on: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_on):
            q = F.normalize(model(dict(queries))["sentence_embedding"], dim=-1)
            p = F.normalize(model(dict(passages))["sentence_embedding"], dim=-1)
            loss = F.cross_entropy(q @ p.T * 20, torch.arange(8) * 5)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    for bf16_on in (False, True, False, True):  # the first of each is the warm-up
        print(f"train step: {'bf16' if bf16_on else 'fp32'} {step(bf16_on):.2f} s")


if __name__ == "__main__":
    main()
