"""Texts/s of clpft's encoder at several CPU token budgets, bf16 and fp32, on SciFact passages (256 tokens).

    python benchmarks/studies/encode_budget.py      # about a minute; writes benchmarks/results/encode_budget.json

The measurement behind ``clpft.mining.encode.cpu_token_budget`` (small batches on the AMD machine, large
ones on a CPU with AMX)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import clpft
from clpft import precision
from clpft.files import write_json
from clpft.mining.encode import encode_texts

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact" / "corpus.jsonl"
OUT = Path(__file__).resolve().parents[1] / "results" / "encode_budget.json"


def main() -> None:
    model = clpft.load_model()
    with DATA.open() as handle:
        texts = [json.loads(line)["text"] for line, _ in zip(handle, range(96))]
    encode_texts(model, texts[:16], "document", 256)  # warm-up
    rows = []
    for name in ("bf16", "fp32"):
        with precision.use(name):
            for budget in (1024, 4096, 16384):
                started = time.perf_counter()
                encode_texts(model, texts, "document", 256, token_budget=budget)
                rate = round(len(texts) / (time.perf_counter() - started), 1)
                rows.append({"precision": name, "token_budget": budget, "texts_per_second": rate})
                print(rows[-1], flush=True)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    write_json(OUT, {"amx": amx, "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
