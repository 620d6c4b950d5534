"""What the MoE-upcycled intermediate layers cost in a training step, with and without bf16 autocast.

One forward + backward of the packaged all-MiniLM-L6-v2 on a batch the size of the default's (8 queries, each
with a positive and 4 negatives: SciFact texts cut at 256 tokens), through an MNRL-style loss, for the plain
model (what sentence-transformers' recipe trains) and for the model upcycled as the default does (2 experts,
top-1, every intermediate layer); fp32 and bf16 autocast. Reports the best of ``--repeats`` timed steps (after
one untimed) and the bytes autograd saves for the backward pass (each storage counted once): the activation
memory the step holds at its peak. Then torch.profiler's top operators for one intermediate layer, dense
against MoE.

    python benchmarks/studies/moe_step_cost.py --out benchmarks/results/moe_step_cost
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact"
VARIANTS = {  # name: (upcycled to MoE, bf16 autocast)
    "plain fp32": (False, False),
    "plain bf16": (False, True),
    "moe fp32": (True, False),
    "moe bf16": (True, True),
}


def texts(batch: int) -> tuple[list[str], list[str]]:
    with open(DATA / "corpus.jsonl") as corpus, open(DATA / "queries.jsonl") as queries:
        docs = [json.loads(line) for line in itertools.islice(corpus, 5 * batch)]
        questions = [json.loads(line)["text"] for line in itertools.islice(queries, batch)]
    return questions, [f"{d['title']} {d['text']}" for d in docs]


def step(model, columns, bf16: bool) -> tuple[float, float]:
    """Seconds of one forward + backward, and MB of tensors saved for the backward pass."""
    features = [model.preprocess(column) for column in columns]
    saved: dict[int, int] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embeddings = [model(f)["sentence_embedding"] for f in features]
        queries = F.normalize(embeddings[0].float(), dim=-1)
        candidates = F.normalize(torch.cat(embeddings[1:]).float(), dim=-1)
        loss = F.cross_entropy(queries @ candidates.T * 20, torch.arange(len(queries)))
    loss.backward()
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return seconds, sum(saved.values()) / 2**20


def layer_profile(bf16: bool = True, tokens: tuple[int, int] = (8, 256)) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from clpft.moe.modeling_clpft_moe import MoELinear

    torch.manual_seed(0)
    dense = torch.nn.Linear(384, 1536)
    layers = {"dense": dense, "moe": MoELinear.from_dense(dense, 2, 1)}
    x = torch.randn(*tokens, 384, requires_grad=True)
    out = {}
    for name, layer in layers.items():

        def run(layer=layer):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = F.gelu(layer(x))
            y.float().sum().backward()

        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                run()
        averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        out[name] = {
            "seconds": round(sum(e.self_cpu_time_total for e in averages) / 1e6, 3),
            "top_ops_ms": {e.key: round(e.self_cpu_time_total / 1e3, 1) for e in averages[:8]},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from clpft.files import write_json, write_text
    from clpft.models import default_model_path
    from clpft.moe.preparation import prepare_model
    from clpft.options import TrainConfig

    questions, passages = texts(args.batch)
    columns = [questions] + [passages[i * args.batch : (i + 1) * args.batch] for i in range(5)]
    rows = {}
    for name, (moe, bf16) in VARIANTS.items():
        model = SentenceTransformer(str(default_model_path()), model_kwargs={"use_safetensors": True})
        model.max_seq_length = 256
        if moe:
            prepare_model(model, TrainConfig())
        model.train()
        step(model, columns, bf16)  # untimed: first-call allocations
        timed = [step(model, columns, bf16) for _ in range(args.repeats)]
        rows[name] = {"seconds": round(min(t for t, _ in timed), 3), "saved_mb": round(timed[-1][1])}
        print(name, rows[name], flush=True)
    profile = layer_profile()
    command = "python benchmarks/studies/moe_step_cost.py " + " ".join(sys.argv[1:])
    report = {"command": command, "torch_threads": torch.get_num_threads(), "steps": rows, "layer_profile": profile}
    lines = [
        "# The MoE layers' cost in one training step",
        "",
        f"`{command}`; torch threads {torch.get_num_threads()}; batch {args.batch} x (query, positive, 4 negatives), "
        "256 tokens; best of the timed steps.",
        "",
        "| variant | s / step | vs plain fp32 | saved for backward, MB |",
        "|---|---|---|---|",
    ]
    base = rows["plain fp32"]["seconds"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x | {r['saved_mb']} |")
    lines += ["", "One intermediate layer + GELU, bf16 autocast, 3 x forward + backward of 8 x 256 tokens:", ""]
    for name, p in profile.items():
        ops = ", ".join(f"{op} {ms}" for op, ms in p["top_ops_ms"].items())
        lines.append(f"- {name}: {p['seconds']} s; top operators (ms): {ops}")
    write_json(args.out + ".json", report)
    write_text(args.out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
