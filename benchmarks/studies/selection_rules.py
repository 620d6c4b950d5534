"""Which rule should choose the saved model? Judged on validation queries the rule did not choose on.

The guard ends a run with candidates (the start, the best step, the weights' moving average with ``--ema``,
merges with the start at each α of ``--merge-grid``) and records each one's per-query validation nDCG@10 in
``model/training.json`` (``guard.candidates``). A rule that chooses on those same queries is scored by
them too: of course the best score looks best there. Here the validation queries of each run are split at
random into two halves, many times; each rule chooses on one half and the chosen candidate is scored on the
other (and the other way round). The rule with the higher held-half score chooses better on queries it has
not seen, which is what the test split (never read here) asks of it.

Rules (``clpft.training.guard.choose``): ``one-se`` (the candidate nearest the start within one standard
error of the best score), ``best`` (the best score) and ``clear-best`` (the best if it leads the start by more
than one standard error, else the start), each over candidate sets: the default's quarters
(α 0.25, 0.5, 0.75, the best step, the start), the same with the moving average, and every α the run scored.
The candidates themselves were built once on the whole validation split (which merges exist, and whether
they start from the best step or the average): a small advantage of the run's candidates over their
alternatives, shared by every rule, so the comparison between rules stands.

    python benchmarks/studies/selection_rules.py --runs scifact=runs/quality/rows/scifact/ROW/run \\
        cranfield=... xquad-hi=... --out benchmarks/results/selection_rules
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

QUARTERS = (0.25, 0.5, 0.75)


def candidate_sets(candidates: list[dict]) -> dict[str, list[dict]]:
    """The candidate sets the rules choose among, by name (only those this run's candidates make up)."""
    merges = [c for c in candidates if 0.0 < c["alpha"] < 1.0]
    ends = [c for c in candidates if c["alpha"] in (0.0, 1.0) and not c["label"].startswith("average")]
    average = [c for c in candidates if c["label"].startswith("average")]
    quarters = [c for c in merges if round(c["alpha"], 6) in QUARTERS]
    sets = {"quarters": ends + quarters}
    if average:
        sets["quarters + average"] = ends + average + quarters
    if len(merges) > len(quarters):
        sets["every α" + (" + average" if average else "")] = ends + average + merges
    return sets


def choose(candidates: list[dict], queries: list[str], rule: str) -> dict:
    """``clpft.training.guard.choose`` on the given queries only (the same rule, restricted to a half)."""
    from clpft.training.guard import Candidate
    from clpft.training.guard import choose as guard_choose

    restricted = [
        Candidate(
            sum(c["per_query"][q] for q in queries) / len(queries),
            c["alpha"],
            c["label"],
            {q: c["per_query"][q] for q in queries},
        )
        for c in candidates
    ]
    label = guard_choose(restricted, rule).label
    return next(c for c in candidates if c["label"] == label)


def mean_on(candidate: dict, queries: list[str]) -> float:
    return sum(candidate["per_query"][q] for q in queries) / len(queries)


def study(name: str, training_json: Path, splits: int, seed: int) -> dict:
    guard = json.loads(training_json.read_text(encoding="utf-8"))["guard"]
    candidates = guard.get("candidates") or []
    if not candidates or any(c.get("per_query") is None for c in candidates):
        raise SystemExit(f"{training_json}: no per-query candidate scores (a run from before they were recorded)")
    queries = sorted(candidates[0]["per_query"])
    start = next(c for c in candidates if c["alpha"] == 0.0)
    rng = random.Random(f"{seed}:{name}")
    results: dict[str, dict] = {}
    for set_name, members in candidate_sets(candidates).items():
        for rule in ("one-se", "best", "clear-best"):
            held_scores, gains, chosen_labels = [], [], []
            for _ in range(splits):
                shuffled = queries[:]
                rng.shuffle(shuffled)
                half = len(shuffled) // 2
                for choose_on, score_on in ((shuffled[:half], shuffled[half:]), (shuffled[half:], shuffled[:half])):
                    pick = choose(members, choose_on, rule)
                    held = mean_on(pick, score_on)
                    held_scores.append(held)
                    gains.append(held - mean_on(start, score_on))
                    chosen_labels.append(pick["label"])
            results[f"{rule}, {set_name}"] = {
                "held_half_ndcg@10": sum(held_scores) / len(held_scores),
                "gain_over_start": sum(gains) / len(gains),
                "chose_start": chosen_labels.count("start") / len(chosen_labels),
                "most_chosen": max(set(chosen_labels), key=chosen_labels.count),
                "choices": len(chosen_labels),
            }
    whole = {c["label"]: c["score"] for c in candidates}
    return {"queries": len(queries), "candidates": whole, "guard_chose": guard.get("chosen"), "rules": results}


def markdown(report: dict, command: str) -> str:
    lines = [
        "# Choosing the saved model: each rule judged on validation queries it did not choose on",
        "",
        f"`{command}`",
        "",
        f"Each run's validation queries split at random in two halves, {report['splits']} times (seed "
        f"{report['seed']}); each rule chooses on one half and is scored on the other, both ways. "
        "Held-half nDCG@10: the chosen candidate's mean score on the half it did not see; gain: the same minus the "
        "start's on that half. Test splits are never read.",
        "",
    ]
    rules = sorted({rule for data in report["datasets"].values() for rule in data["rules"]})
    header = "| rule, candidates | " + " | ".join(report["datasets"]) + " | mean gain |"
    lines += [
        "## Held-half gain over the start (nDCG@10)",
        "",
        header,
        "|---" * (len(report["datasets"]) + 2) + "|",
    ]
    for rule in rules:
        gains = [data["rules"].get(rule, {}).get("gain_over_start") for data in report["datasets"].values()]
        cells = [f"{g:+.4f}" if g is not None else "-" for g in gains]
        known = [g for g in gains if g is not None]
        mean = f"{sum(known) / len(known):+.4f}" if len(known) == len(gains) else "-"
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {mean} |")
    for name, data in report["datasets"].items():
        lines += [
            "",
            f"## {name}: {data['queries']} validation queries; the run's guard chose {data['guard_chose']}",
            "",
            "| rule, candidates | held-half nDCG@10 | gain over start | chose the start | most chosen |",
            "|---|---|---|---|---|",
        ]
        for rule, row in data["rules"].items():
            lines.append(
                f"| {rule} | {row['held_half_ndcg@10']:.4f} | {row['gain_over_start']:+.4f} | "
                f"{100 * row['chose_start']:.0f}% | {row['most_chosen']} |"
            )
        lines += [
            "",
            "Candidates (whole validation split): "
            + ", ".join(f"{label} {score:.4f}" for label, score in data["candidates"].items()),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR (a `clpft run` output) ...")
    parser.add_argument("--splits", type=int, default=500, help="random halvings per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    from clpft.files import write_json, write_text

    datasets = {}
    for item in args.runs:
        name, _, folder = item.partition("=")
        training_json = Path(folder) / "model" / "training.json"
        if not training_json.is_file():
            raise SystemExit(f"{training_json}: not found (NAME=RUN_DIR, the folder `clpft run --out` wrote)")
        datasets[name] = study(name, training_json, args.splits, args.seed)
    report = {"splits": args.splits, "seed": args.seed, "datasets": datasets}
    command = "python benchmarks/studies/selection_rules.py " + " ".join(sys.argv[1:])
    write_json(Path(args.out).with_suffix(".json"), report)
    write_text(Path(args.out).with_suffix(".md"), markdown(report, command))
    print(markdown(report, command))


if __name__ == "__main__":
    main()
