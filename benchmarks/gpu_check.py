"""One script for a lent GPU: CLP+MoE training throughput on a BGE-M3-sized XLM-R, no download.

    python benchmarks/gpu_check.py                      # H100/H200: the real size, bf16, < 8 minutes
    python benchmarks/gpu_check.py --tiny --device cpu  # what the CPU tests run: a tiny config

The model is built from a config (random weights: throughput does not depend on the values), upcycled
with clpft's MoE on the FFN intermediate layers, and only the MoE layers are trained with CLPLoss on
synthetic token ids: per step ``--batch`` queries of ``--query-len`` tokens, each with 1 positive + 4
negatives of ``--passage-len`` tokens and one own query per negative. Printed (and written with --out):
tokens/s, seconds/step, an MFU estimate (6 x parameters touched x tokens for the trained path; a rough
figure: frozen layers skip weight gradients, so true FLOPs are lower) and peak GPU memory, for each MoE
dispatch variant (``grouped``: one sort, one matmul per expert on its tokens; ``masked``: every expert on
every token, outputs masked: more FLOPs, no gathers).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from clpft.losses import CLPLoss
from clpft.moe.modeling_clpft_moe import MoELinear

BGE_M3 = dict(
    vocab_size=250002,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    max_position_embeddings=8194,
    type_vocab_size=1,
)
TINY = dict(
    vocab_size=1000,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=130,
    type_vocab_size=1,
)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, no sparsity


class Encoder(torch.nn.Module):
    """CLS pooling over a transformers encoder, with the ``{"sentence_embedding": ...}`` output that
    clpft's losses expect from a SentenceTransformer (no tokenizer: the ids are synthetic)."""

    def __init__(self, hf_model: torch.nn.Module) -> None:
        super().__init__()
        self.hf_model = hf_model

    def forward(self, features: dict) -> dict:
        hidden = self.hf_model(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"]
        ).last_hidden_state
        return {"sentence_embedding": hidden[:, 0]}


def build(config_kwargs: dict, device: str):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from clpft.moe import upcycle
    from clpft.moe.preparation import set_trainable

    config = XLMRobertaConfig(**config_kwargs)
    hf_model = XLMRobertaModel(config, add_pooling_layer=False)
    upcycle(hf_model, where="intermediate", num_experts=2, experts_per_token=1)
    trainable, total = set_trainable(hf_model, "moe")
    return Encoder(hf_model).to(device), trainable, total


def batch(args, vocab: int, device: str) -> tuple[list[dict], torch.Tensor]:
    def texts(n, length):
        ids = torch.randint(5, vocab, (n, length), device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    b, k = args.batch, 4
    columns = [texts(b, args.query_len), texts(b, args.passage_len)] + [texts(b, args.passage_len) for _ in range(k)]
    columns.append(texts(b * k, args.query_len))  # one own query per negative
    labels = torch.arange(b * k, device=device).reshape(b, k, 1)
    return columns, labels


def run_variant(model, dispatch: str, args, device: str, trainable: int) -> dict:
    for module in model.modules():
        if isinstance(module, MoELinear):
            module.dispatch = dispatch
    loss_fn = CLPLoss(model, penalty_weight=0.1, temperature=0.02)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    columns, labels = batch(args, model.hf_model.config.vocab_size, device)
    tokens = sum(c["input_ids"].numel() for c in columns)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(columns, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    seconds = sum(times) / len(times)
    result = {
        "dispatch": dispatch,
        "seconds_per_step": round(seconds, 4),
        "tokens_per_second": round(tokens / seconds, 1),
        "tokens_per_step": tokens,
        "loss": round(float(loss), 4),
    }
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        active = (
            sum(p.numel() for p in model.parameters()) - trainable // 2
        )  # top-1 of 2 experts: half the expert weights run
        if peak:
            result["mfu_estimate"] = round(6 * active * tokens / seconds / (peak * 1e12), 4)
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["gpu"] = name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny config (CPU test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8, help="queries per step")
    parser.add_argument("--query-len", type=int, default=64)
    parser.add_argument("--passage-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="grouped,masked")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    if args.tiny:
        args.query_len, args.passage_len = min(args.query_len, 16), min(args.passage_len, 32)
    if args.device == "cpu":
        args.bf16 = False
    torch.manual_seed(0)
    model, trainable, total = build(TINY if args.tiny else BGE_M3, args.device)
    report = {
        "config": "tiny" if args.tiny else "bge-m3-sized xlm-roberta",
        "device": args.device,
        "bf16": args.bf16,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "batch": args.batch,
        "query_len": args.query_len,
        "passage_len": args.passage_len,
        "variants": [],
    }
    for dispatch in args.variants.split(","):
        result = run_variant(model, dispatch, args, args.device, trainable)
        print(json.dumps(result), flush=True)
        report["variants"].append(result)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "variants"}))


if __name__ == "__main__":
    main()
