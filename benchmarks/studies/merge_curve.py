"""What each weight-space merge of a finished `clpft run` scores: in domain and zero-shot (a report, not a choice).

    python benchmarks/studies/merge_curve.py --run runs/quality/rows/scifact/default-3-epochs/run \\
        --data ../shared/data/scifact --zero-shot ../shared/data/cranfield --out benchmarks/results/merge_curve

The guard (clpft.training.guard) chooses among the start, the best step and the merges
θ(α) = (1 - α) · θ_start + α · θ_best on the validation split alone. This script shows what that choice costs or
keeps on the test splits: it rebuilds the run's start exactly (the packaged model, upcycled after
``set_seed(config.seed)`` as ``train_model`` does, so the routers start where they started), blends it with the
saved model at each α, checks that each blend scores on the run's own validation split what the guard recorded
for it (so the blend is the guard's candidate, not an approximation), then evaluates every blend with
`clpft eval` on the test split of ``--data`` and of each ``--zero-shot`` dataset. Nothing here feeds back
into a default: the test splits are read only to report.

Writes OUT.json and OUT.md; each evaluated blend is cached in WORK (runs/merge_curve) by run and α.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # benchmarks/
ROOT = HERE.parent


def rebuild_start(config: dict):
    """The run's model at step 0: the packaged model upcycled and set trainable as ``train_model`` did."""
    from transformers import set_seed

    from clpft.models import load_model
    from clpft.moe.preparation import prepare_model
    from clpft.options import TrainConfig

    fields = ("moe", "num_experts", "experts_per_token", "train_only", "seed")
    model = load_model(None)
    set_seed(config["seed"])
    prepare_model(model, TrainConfig(**{name: config[name] for name in fields}))
    return model


def validation_score(model, run: Path, config: dict, data: Path) -> float:
    """The blend's nDCG@10 on the run's validation split, ranked as the guard ranks it (same precision)."""
    from clpft.data import load_dataset
    from clpft.data.trainset import read_train_jsonl
    from clpft.precision import autocast
    from clpft.precision import resolve as resolve_precision
    from clpft.training.validation import ValidationRanking, split_validation

    examples = read_train_jsonl(run / "train.jsonl")
    _, held_out = split_validation(examples, config["val_fraction"], config["seed"])
    corpus = {d: doc.full_text for d, doc in load_dataset(data, "train").corpus.items()}
    ranking = ValidationRanking(
        held_out,
        corpus,
        query_max_tokens=config["query_max_tokens"],
        passage_max_tokens=config["passage_max_tokens"],
        seed=config["seed"],
    )
    with autocast(model.device.type, resolve_precision(config["precision"], model.device.type)):
        return ranking(model)["ndcg@10"]


def test_ndcg(model_dir: Path, data: Path, out: Path) -> dict:
    """`clpft eval` on the test split: the same command the quality benchmark's rows use."""
    if not out.is_file():
        command = [sys.executable, "-m", "clpft.cli", "eval", "--data", str(data), "--model", str(model_dir)]
        done = subprocess.run([*command, "--out", str(out), "--overwrite", "--quiet"], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"clpft eval failed on {data}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `clpft run` folder (model/ and train.jsonl)")
    parser.add_argument("--data", required=True, help="the dataset the run trained on (BEIR folder)")
    parser.add_argument("--zero-shot", action="append", default=[], help="another dataset's test split (repeatable)")
    parser.add_argument("--alphas", default="0.25,0.5,0.75")
    parser.add_argument(
        "--with-ends",
        action="store_true",
        help="also run the test evaluations of α 0 and 1 (the untouched and the saved model: the quality "
        "benchmark's base row and the run's own row have them); without it they get the validation check only",
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "merge_curve"))
    parser.add_argument("--out", required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    import torch

    from clpft.files import write_json, write_text
    from clpft.models import load_model, save_model
    from clpft.training.guard import blend, load_state, trainable_state

    run, data = Path(args.run), Path(args.data)
    training = json.loads((run / "model" / "training.json").read_text())
    config, guard = training["config"], training.get("guard") or {}
    torch.set_grad_enabled(False)
    start, tuned = rebuild_start(config), load_model(run / "model")
    start_state = trainable_state(start)
    tuned_state = {name: p.detach().clone() for name, p in tuned.named_parameters() if name in start_state}
    if set(tuned_state) != set(start_state):
        raise SystemExit("the saved model's weights do not match the rebuilt start's (another model or MoE layout)")
    saved_alpha = guard.get("merge_alpha")
    if saved_alpha:
        # The guard saved a merge θ_s = (1 - α_s) θ_start + α_s θ_best: its best step is rebuilt as
        # θ_start + (θ_s - θ_start) / α_s (to float rounding), so every α below is relative to the best step,
        # as the guard's recorded scores are; the validation column checks the rebuilt state against them.
        tuned_state = blend(start_state, tuned_state, 1.0 / saved_alpha)
    datasets = [data, *map(Path, args.zero_shot)]
    work = Path(args.work) / run.resolve().parent.name / run.name
    rows = []
    for alpha in [0.0, *(float(a) for a in args.alphas.split(",")), 1.0]:
        folder = work / f"alpha-{alpha:g}"
        recorded = {0.0: guard.get("start_score"), 1.0: guard.get("best_score")}
        row = {"alpha": alpha, "guard_validation": recorded.get(alpha, guard.get("merge_scores", {}).get(f"{alpha:g}"))}
        load_state(tuned, blend(start_state, tuned_state, alpha))
        if config.get("val_fraction"):
            row["validation"] = validation_score(tuned, run, config, data)
        # α 1 is the run's own saved model (the quality row has its test scores) unless the guard saved a merge.
        if (alpha == 0.0 or (alpha == 1.0 and not saved_alpha)) and not args.with_ends:
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        if not (folder / "model").is_dir():
            save_model(tuned, folder / "model", overwrite=True)
        for dataset in datasets:
            metrics = test_ndcg(folder / "model", dataset, folder / f"{dataset.name}.json")
            row[dataset.name] = {k: metrics[k] for k in ("ndcg@10", "ndcg@5", "recall@100", "mrr@10")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {"run": str(run), "chosen": guard.get("chosen"), "best_step": guard.get("best_step"), "rows": rows}
    base = rows[0] if args.with_ends else None
    lines = [
        "# What each merge of the start and the tuned model scores",
        "",
        f"`python benchmarks/studies/merge_curve.py {' '.join(sys.argv[1:])}`",
        "",
        f"Run: `{run}` (the guard saved: {guard.get('chosen')}). θ(α) = (1 - α) θ_start + α θ_best (step "
        f"{guard.get('best_step')}"
        + (
            f", rebuilt from the saved merge as θ_start + (θ_saved - θ_start) / {saved_alpha:g}"
            if saved_alpha
            else ", the saved model"
        )
        + "); α 0 is the untouched model. validation: the run's own split "
        "(what the guard chose on), recomputed here, beside what the guard recorded; test: `clpft eval`, nDCG@10, "
        "and the change against α 0 (with `--with-ends`; without it α 0 is the quality benchmark's base row, and "
        "α 1 the run's own row where the guard saved the best step).",
        "",
        "| α | validation (recomputed / guard) | " + " | ".join(f"{d.name} test | change" for d in datasets) + " |",
        "|---|---|" + "---|---|" * len(datasets),
    ]
    for row in rows:
        val = " / ".join("-" if row.get(k) is None else f"{row[k]:.4f}" for k in ("validation", "guard_validation"))
        cells = [
            "- | -"
            if d.name not in row
            else f"{row[d.name]['ndcg@10']:.4f} | "
            + (f"{row[d.name]['ndcg@10'] - base[d.name]['ndcg@10']:+.4f}" if base else "-")
            for d in datasets
        ]
        lines.append(f"| {row['alpha']:g} | {val} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
