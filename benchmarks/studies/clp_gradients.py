"""How large is CLP's penalty next to its InfoNCE term, in the gradient that trains the model?

    python benchmarks/studies/clp_gradients.py --train runs/tune/scifact-ext/tune.jsonl \\
        --out benchmarks/results/clp_gradients_scifact      # -> .json and .md

--train is any mined train.jsonl; the one above is the tuning set that `benchmarks/studies/tune_presets.py --data
../shared/data/scifact --out runs/tune/scifact-ext --neg-queries qrels,extractive` mines first (200 training
queries, ANCE negatives, every negative with an own query from the qrels or the extractive fallback).

For each training example (one query, its positive, its negatives and the negatives' own queries) this
takes the gradient of InfoNCE (at τ 0.02 and 0.05) and of the penalty P = 1 - mean cos(negative, own
query) with respect to the weights that train (every weight, or only the MoE layers), and reports the
median of ||∇P|| / ||∇InfoNCE||. With L = (1-λ)·InfoNCE + λ·P the penalty's share of the step is
then λ/(1-λ) times that ratio, and λ* = 1 / (1 + ratio) is the λ at which both terms pull equally hard.
Adam divides each update by the gradient's running size (and the trainer clips the gradient's norm to
1.0, while the logged norms are about 50), so scaling the whole loss changes nothing: only this ratio
decides what λ does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from clpft.data.trainset import read_train_jsonl
from clpft.errors import ClpftError
from clpft.files import write_json, write_text
from clpft.losses import CLPLoss
from clpft.models import load_model
from clpft.moe import upcycle
from clpft.moe.preparation import set_trainable

TEMPERATURES = (0.02, 0.05)
LAMBDAS = (0.1, 0.3, 0.5, 0.9)


def _embed(model, texts: list[str], max_tokens: int) -> torch.Tensor:
    features = model.preprocess(texts, max_length=max_tokens)
    return model(features)["sentence_embedding"]


def _grad_norm(value: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def measure(model_path: str | None, train_only: str, examples, passage_max_tokens: int) -> dict:
    model = load_model(model_path)
    if train_only == "moe":
        upcycle(model, "intermediate", num_experts=2, experts_per_token=1)
    set_trainable(model, train_only)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = CLPLoss(model)  # only its two terms are used, so λ does not matter; τ is set per measurement
    ratios: dict[float, list[float]] = {tau: [] for tau in TEMPERATURES}
    for example in examples:
        own = [(j, q) for j, queries in enumerate(example.own_queries) for q in queries[:1]]
        query, positive, negatives = (
            _embed(model, [example.query], 128),
            _embed(model, example.pos[:1], passage_max_tokens),
            _embed(model, example.neg, passage_max_tokens),
        )
        own_queries = _embed(model, [q for _, q in own], 128)
        labels = torch.full((1, len(example.neg), 1), -1, dtype=torch.long)
        for row, (j, _) in enumerate(own):
            labels[0, j, 0] = row
        columns = [query, positive, *[negatives[j : j + 1] for j in range(len(example.neg))]]
        penalty = _grad_norm(loss.penalty(columns[2:], own_queries, labels), params)
        for tau in TEMPERATURES:
            loss.temperature = tau
            ratios[tau].append(penalty / max(_grad_norm(loss.infonce(columns), params), 1e-12))
    result = {}
    for tau, values in ratios.items():
        ratio = statistics.median(values)
        result[str(tau)] = {
            "median_ratio": ratio,
            "quartiles": statistics.quantiles(values, n=4),
            "lambda_equal": 1.0 / (1.0 + ratio),
            "penalty_share": {str(lam): lam / (1 - lam) * ratio for lam in LAMBDAS},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="a mined train.jsonl whose negatives have own queries")
    parser.add_argument("--model", default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--examples", type=int, default=32, help="examples measured (those with own queries)")
    parser.add_argument("--passage-max-tokens", type=int, default=128)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    try:
        examples = [e for e in read_train_jsonl(args.train) if any(e.own_queries)][: args.examples]
    except ClpftError as error:
        raise SystemExit(f"clp_gradients: error: {error}") from None
    if not examples:
        raise SystemExit(
            f"clp_gradients: error: {args.train}: no negative has a query of its own (mine with --neg-queries)"
        )
    started = time.perf_counter()
    results = {
        train_only: measure(args.model, train_only, examples, args.passage_max_tokens) for train_only in ("all", "moe")
    }
    report = {
        "train": args.train,
        "out": args.out,
        "model": args.model or "packaged all-MiniLM-L6-v2",
        "examples": len(examples),
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    write_json(Path(args.out).with_suffix(".json"), report)
    write_text(Path(args.out).with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# CLP: the penalty's gradient next to InfoNCE's",
        "",
        f"`python benchmarks/studies/clp_gradients.py --train {report['train']} --out {report['out']}` "
        f"({report['model']}, {report['examples']} "
        f"training examples, {report['seconds']:.0f} s). Median over examples of ||∇P|| / ||∇InfoNCE|| with respect to "
        "the weights that train; the penalty's share of the pull is λ/(1-λ) times it "
        "(`benchmarks/studies/clp_gradients.py` "
        "says why only this ratio matters under Adam).",
        "",
        "| trains | τ | ‖∇P‖/‖∇InfoNCE‖ (median; quartiles) | λ where both pull equally | "
        + " | ".join(f"λ={lam}: λ/(1-λ)·ratio" for lam in LAMBDAS)
        + " |",
        "|---|---|---|---|" + "---|" * len(LAMBDAS),
    ]
    for train_only, by_tau in report["results"].items():
        for tau, r in by_tau.items():
            q1, _, q3 = r["quartiles"]
            lines.append(
                f"| {train_only} | {tau} | {r['median_ratio']:.3f} ({q1:.3f}-{q3:.3f}) | {r['lambda_equal']:.2f} | "
                + " | ".join(f"{r['penalty_share'][str(lam)]:.3f}" for lam in LAMBDAS)
                + " |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
