"""The ablation ladder's report: every row's mean metrics with bootstrap intervals, paired randomisation tests
against the reference rows (base, ance-infonce, st-mnrl), as report.json, report.md and report.png."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from clpft.ablation.ladder import REFERENCES, ROWS
from clpft.evaluation.metrics import METRICS
from clpft.evaluation.statistics import bootstrap_ci, paired_randomization_test
from clpft.files import atomic_file
from clpft.presets import DEFAULT_PRESET, PRESETS


def preset_of(train_args: list[str]) -> str:
    return train_args[train_args.index("--preset") + 1] if "--preset" in train_args else DEFAULT_PRESET


def build_report(results: dict[str, list[dict]], options: Any) -> dict[str, Any]:  # options: AblationOptions
    per_query: dict[str, dict[str, float]] = {}
    rows = []
    for name, runs in results.items():
        queries = sorted(runs[0]["per_query_ndcg@10"])
        per_query[name] = {q: statistics.fmean(r["per_query_ndcg@10"][q] for r in runs) for q in queries}
        summary = {}
        for metric in METRICS:
            values = [r["metrics"][metric] for r in runs]
            summary[metric] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        low, high = bootstrap_ci(list(per_query[name].values()), seed=options.seed)
        rows.append(
            {
                "row": name,
                "description": ROWS[name].description,
                "seeds": [r["seed"] for r in runs],
                "metrics": summary,
                "ndcg@10_ci95": [low, high],
                "trainable_parameters": runs[0]["trainable_parameters"],
                "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
                "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in runs) or None,
            }
        )
    for row in rows:
        row["p_value"] = {}
        for reference in REFERENCES:
            if reference in per_query and reference != row["row"]:
                queries = sorted(per_query[reference])
                row["p_value"][reference] = paired_randomization_test(
                    [per_query[row["row"]][q] for q in queries],
                    [per_query[reference][q] for q in queries],
                    seed=options.seed,
                )
    return {
        "data": options.data,
        "model": options.model or "all-MiniLM-L6-v2 (packaged)",
        "eval_split": options.eval_split,
        "seeds": options.seeds,
        "mine_args": options.mine_args,
        "train_args": options.train_args,
        "preset": {
            "name": preset_of(options.train_args),
            **dataclasses.asdict(PRESETS[preset_of(options.train_args)]),
        },
        "test": "two-sided paired randomisation test (sign flips) over per-query nDCG@10, averaged over seeds; "
        "95% intervals: percentile bootstrap over queries (10,000 resamples)",
        "rows": rows,
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Ablation on {Path(report['data']).name} ({report['eval_split']} split)",
        "",
        f"Model: {report['model']}. Seeds: {report['seeds']}. "
        f"Mining options: `{' '.join(report['mine_args']) or 'defaults'}`; "
        f"training options: `{' '.join(report['train_args']) or 'defaults'}`.",
        *(
            [
                f"Preset `{report['preset']['name']}` (settings not given as options): lr "
                + ", ".join(f"{v:g} ({k})" for k, v in report["preset"]["learning_rate"].items())
                + ", tau "
                + ", ".join(f"{v:g} ({k})" for k, v in report["preset"]["temperature"].items())
                + f", lambda {report['preset']['penalty_weight']:g}, "
                f"{report['preset']['epochs']:g} epochs, batch {report['preset']['batch_size']} x accumulation "
                f"{report['preset']['grad_accum']}."
            ]
            if "preset" in report
            else []
        ),
        "",
    ]
    references = [r for r in REFERENCES if any(r in row["p_value"] for row in report["rows"])]
    lines += [
        "| row | nDCG@5 | nDCG@10 | nDCG@10 95% CI | recall@100 | MRR@10 | "
        + "".join(f"p vs {r} | " for r in references)
        + "trainable params | train s | peak MB |",
        "|---|---|---|---|---|---|" + "---|" * len(references) + "---|---|---|",
    ]

    def fmt(metric: dict[str, float]) -> str:
        return f"{metric['mean']:.4f}" + (f" ± {metric['std']:.4f}" if metric["std"] else "")

    for row in report["rows"]:
        m = row["metrics"]
        p = row["p_value"]
        lines.append(
            f"| {row['row']} | {fmt(m['ndcg@5'])} | {fmt(m['ndcg@10'])} "
            f"| {row['ndcg@10_ci95'][0]:.4f}–{row['ndcg@10_ci95'][1]:.4f} "
            f"| {fmt(m['recall@100'])} | {fmt(m['mrr@10'])} | "
            + "".join(f"{p.get(r, float('nan')):.4f} | " for r in references)
            + f"{row['trainable_parameters']:,} | {row['train_seconds']:.0f} | {row['peak_rss_mb'] or '-'} |"
        )
    lines += ["", f"Significance: {report['test']}.", ""]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["row"] for row in report["rows"]]
    means = [row["metrics"]["ndcg@10"]["mean"] for row in report["rows"]]
    lows = [m - row["ndcg@10_ci95"][0] for m, row in zip(means, report["rows"])]
    highs = [row["ndcg@10_ci95"][1] - m for m, row in zip(means, report["rows"])]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    ax.bar(range(len(names)), means, yerr=[lows, highs], capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("nDCG@10 (95% bootstrap CI)")
    ax.set_title(f"clpft ablation: {Path(report['data']).name}, {report['eval_split']} split")
    low = min(mean - bottom for mean, bottom in zip(means, lows))
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(m + h for m, h in zip(means, highs)) + 0.05))
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
