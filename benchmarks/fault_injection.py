"""Fault injection: kill clpft with SIGKILL at points spread over a whole run, `--resume`, and check it finishes
with the uninterrupted run's result and no half-written output.

Three scenarios, on a tiny random BERT and the tests' tiny BEIR folder (so hundreds of kills stay cheap):

- `clpft run` (own queries from qrels + extractive, so the query cache is written; a checkpoint every 3 of
  its 12 optimizer steps), killed at each named kill point of ``clpft.faults`` (corpus encoding, mining, the
  own-query cache, each stage of a checkpoint write, the final model save, both evaluations, the report)
  and at random wall-clock moments, then resumed with ``--resume``: the fine-tuned model's per-query
  metrics must equal the uninterrupted run's to 1e-6.
- `clpft ablation` (rows base and ance-clp-moe), killed mid-row and at random moments, then run again
  (finished rows are cached): the report's metrics must equal the uninterrupted ladder's.
- `clpft mine --neg-queries llm` against a fake OpenAI-compatible server on 127.0.0.1, killed after some
  answers are cached, then run again: no cached document is asked again, and train.jsonl is byte-identical.

- `clpft run --overwrite --lr 1e-3` over a finished run, killed at each stage of the new run and once
  interrupted with SIGINT: the old run is never lost (complete in the run folder, or set aside beside it while
  the new one is unfinished), `--resume` finishes the new run with the new options' result, and after SIGINT
  the old run is back file for file.
- two processes writing one `--out` (`clpft mine`, `clpft run`): the second is refused in one line naming the
  first, and the output is what an undisturbed process writes.

After every resume no temporary file or folder (``.*.tmp``, ``.*.old``, ``.*.replaced``) and no checkpoint
without its completion marker is left.

    python benchmarks/fault_injection.py --out benchmarks/results/fault_injection            # every point
    python benchmarks/fault_injection.py --quick --out /tmp/faults      # 3 kills, an overwrite killed and
                                                                        # interrupted, two `mine` processes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny model and dataset the tests use

# (kill point, which pass through it) for `clpft run`; what each one interrupts
RUN_POINTS = [
    ("encode.batch", 1, "corpus encoding"),
    ("encode.batch", 3, "corpus encoding"),
    ("mine.searched", 1, "mining"),
    ("neg_queries.cached", 2, "own-query cache"),
    ("neg_queries.cached", 3, "own-query cache"),
    ("checkpoint.model_written", 1, "checkpoint write"),
    ("checkpoint.model_written", 3, "checkpoint write"),
    ("checkpoint.unmarked", 2, "checkpoint write"),
    ("checkpoint.rotating", 1, "checkpoint rotation"),
    ("model.saving", 1, "final model save"),
    ("evaluate.encoded", 1, "evaluation (base)"),
    ("evaluate.encoded", 2, "evaluation (fine-tuned)"),
    ("run.evaluated", 1, "report"),
]
QUICK_RUN_POINTS = [
    ("checkpoint.model_written", 2, "checkpoint write"),
    ("model.saving", 1, "final model save"),
    ("evaluate.encoded", 2, "evaluation (fine-tuned)"),
]
ABLATION_POINTS = [
    ("ablation.row_trained", 1, "ablation row"),
    ("model.saving", 1, "ablation row"),
    ("evaluate.encoded", 2, "ablation row"),
]


def environment(kill: str | None = None, env: dict | None = None) -> dict:
    """This process's environment plus ``env``, with CLPFT_KILL_AT set to ``kill`` only."""
    merged = {**os.environ, **(env or {})}
    merged.pop("CLPFT_KILL_AT", None)
    if kill:
        merged["CLPFT_KILL_AT"] = kill
    return merged


def clpft(args: list[str], kill: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clpft.cli", *args],
        env=environment(kill, env),
        capture_output=True,
        text=True,
        timeout=900,
    )


class HeldProcess:
    """`clpft ARGS` started in the background and held at a fault point (``CLPFT_PAUSE_AT``) until ``release``:
    what the harness does to it there (SIGINT, a second process) happens at a known moment of its work, on a
    fast machine as on a slow one."""

    def __init__(self, args: list[str], point: str, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("reached", "go"):
            (folder / name).unlink(missing_ok=True)
        env = environment(env={"CLPFT_PAUSE_AT": point, "CLPFT_PAUSE_DIR": str(folder)})
        with open(folder / "stderr", "wb") as stderr:  # a file, not a pipe: a full pipe would block the process
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clpft.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        while not (folder / "reached").exists():
            if self.process.poll() is not None:
                said = (folder / "stderr").read_text(errors="replace")[-500:]
                raise SystemExit(f"clpft {args[0]} ended before reaching {point}: {said}")
            time.sleep(0.05)

    def release(self) -> int:
        (self.folder / "go").touch()
        return self.process.wait(timeout=900)


def leftovers(folder: Path) -> list[str]:
    """Temporary entries of an atomic write, and checkpoints without their completion marker."""
    from clpft.training.checkpoints import incomplete_reason

    found = []
    for path in folder.rglob("*"):
        if path.name.startswith(".") and (path.name.endswith(".tmp") or path.name.endswith(".old")):
            found.append(str(path.relative_to(folder)))
        elif path.is_dir() and path.name.startswith("checkpoint-") and incomplete_reason(path):
            found.append(str(path.relative_to(folder)))
    return sorted(found)


def fixture(folder: Path) -> tuple[Path, Path]:
    from conftest import make_tiny_beir, make_tiny_model

    model = folder / "model-st"
    if not model.is_dir():
        make_tiny_model(folder / "model-hf").save(str(model))
    return make_tiny_beir(folder / "data"), model


def same_metrics(a: dict, b: dict, tolerance: float = 1e-6) -> bool:
    if a.keys() != b.keys():
        return False
    return all(abs(a[q][m] - b[q][m]) <= tolerance for q in a for m in a[q])


class Scenario:
    """One command, killed and resumed; ``result(folder)`` reads what must not change."""

    def __init__(self, name: str, work: Path, command, resume_flag: list[str], result) -> None:
        self.name, self.work, self.command, self.resume_flag, self.result = name, work, command, resume_flag, result
        self.reference = None
        self.reference_seconds = 0.0

    def run_reference(self) -> None:
        out = self.work / f"{self.name}-reference"
        started = time.perf_counter()
        done = clpft(self.command(out))
        self.reference_seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{self.name}: the uninterrupted run failed: {done.stderr[-2000:]}")
        self.reference = self.result(out)

    def check(self, out: Path, killed: bool, stage: str, point: str) -> dict:
        resumed = clpft([*self.command(out), *self.resume_flag])
        row = {
            "scenario": self.name,
            "stage": stage,
            "point": point,
            "killed": killed,
            "resumed": resumed.returncode == 0,
            "equal": False,
            "leftovers": leftovers(out),
        }
        if resumed.returncode == 0:
            row["equal"] = same_metrics(self.result(out), self.reference)
        else:
            row["error"] = (resumed.stderr.strip().splitlines() or ["?"])[-1]
        row["survived"] = row["killed"] and row["resumed"] and row["equal"] and not row["leftovers"]
        return row

    def at_point(self, point: str, nth: int, stage: str) -> dict:
        out = self.work / f"{self.name}-{point}-{nth}"
        done = clpft(self.command(out), kill=f"{point}:{nth}")
        return self.check(out, done.returncode == -9, stage, f"{point}:{nth}")

    def at_random_moment(self, index: int, rng: random.Random, tries: int = 4) -> dict:
        """A kill at a random moment of the run; when the run finished first (the machine was faster than
        during the reference run), again with the window shrunk to that delay, up to ``tries`` times."""
        window = self.reference_seconds
        for attempt in range(tries):
            out = self.work / f"{self.name}-random-{index}-{attempt}"
            delay = rng.uniform(0.3, 0.95) * window
            process = subprocess.Popen(
                [sys.executable, "-m", "clpft.cli", *self.command(out)],
                env=environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            killed = process.poll() is None
            process.kill()
            process.wait()
            if killed:
                break
            window = delay
        return self.check(out, killed, "random moment", f"after {delay:.1f} s")


def run_scenario(work: Path, data: Path, model: Path) -> Scenario:
    def command(out: Path) -> list[str]:
        return [
            "run",
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            str(model),
            "--num-negatives",
            "2",
            "--epochs",
            "2",
            "--grad-accum",
            "1",
            "--batch-size",
            "1",
            "--val-fraction",
            "0",
            "--save-steps",
            "3",
            "--neg-queries",
            "qrels,extractive",
            "--queries-per-negative",
            "2",
            "--quiet",
        ]

    def result(out: Path) -> dict:
        report = json.loads((out / "metrics.json").read_text())
        return {
            f"{side}:{q}": values for side in ("base", "finetuned") for q, values in report[side]["per_query"].items()
        }

    return Scenario("run", work, command, ["--resume"], result)


def ablation_scenario(work: Path, data: Path, model: Path) -> Scenario:
    def command(out: Path) -> list[str]:
        return [
            "ablation",
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            str(model),
            "--rows",
            "base,ance-clp-moe",
            "--num-negatives",
            "2",
            "--epochs",
            "1",
            "--quiet",
        ]

    def result(out: Path) -> dict:
        report = json.loads((out / "report.json").read_text())
        return {row["row"]: {m: v["mean"] for m, v in row["metrics"].items()} for row in report["rows"]}

    return Scenario("ablation", work, command, [], result)


def llm_scenario(work: Path, data: Path, model: Path, kill_after: int = 3) -> dict:
    """`clpft mine --neg-queries llm` killed after ``kill_after`` answers are cached, then run again."""
    from fake_openai import FakeOpenAI

    server = FakeOpenAI()
    env = {"CLPFT_API_KEY": "sk-fault-injection-0000"}
    try:

        def command(out: Path) -> list[str]:
            return [
                "mine",
                "--data",
                str(data),
                "--out",
                str(out / "train.jsonl"),
                "--model",
                str(model),
                "--strategy",
                "random",
                "--num-negatives",
                "3",
                "--neg-queries",
                "llm",
                "--llm-base-url",
                server.url,
                "--llm-model",
                "fake",
                "--llm-concurrency",
                "1",
                "--overwrite",
                "--quiet",
            ]

        reference = work / "llm-reference"
        reference.mkdir(parents=True, exist_ok=True)
        assert clpft(command(reference), env=env).returncode == 0
        out = work / "llm-killed"
        out.mkdir(parents=True, exist_ok=True)
        killed = clpft(command(out), kill=f"neg_queries.cached:{kill_after}", env=env).returncode == -9
        with sqlite3.connect(out / "train.jsonl.neg_queries.sqlite") as db:
            cached = {row[0] for row in db.execute("SELECT doc_hash FROM queries")}
        server.requests.clear()
        resumed = clpft(command(out), env=env)
        from clpft.ownqueries.cache import text_hash

        asked_again = 0
        for body in server.requests:
            prompt = body["messages"][0]["content"]
            document = prompt.rsplit("Document:", 1)[-1].strip()
            asked_again += any(text_hash(text) in cached for text in {document, document.strip()})
        equal = (
            resumed.returncode == 0 and (out / "train.jsonl").read_bytes() == (reference / "train.jsonl").read_bytes()
        )
        row = {
            "scenario": "mine --neg-queries llm",
            "stage": "own-query cache (LLM)",
            "point": f"neg_queries.cached:{kill_after}",
            "killed": killed,
            "resumed": resumed.returncode == 0,
            "equal": equal,
            "leftovers": leftovers(out),
            "cached_before_resume": len(cached),
            "cached_documents_asked_again": asked_again,
            "requests_after_resume": len(server.requests),
        }
        row["survived"] = killed and row["resumed"] and equal and not row["leftovers"] and asked_again == 0
        return row
    finally:
        server.close()


# (kill point, which pass) for `clpft run --overwrite` over a finished run: one per stage of the new run
OVERWRITE_POINTS = [
    ("encode.batch", 1, "overwrite: corpus encoding"),
    ("mine.searched", 1, "overwrite: mining"),
    ("checkpoint.unmarked", 1, "overwrite: training"),
    ("model.saving", 1, "overwrite: final model save"),
    ("evaluate.encoded", 2, "overwrite: evaluation (fine-tuned)"),
    ("run.evaluated", 1, "overwrite: report"),
]


def overwrite_scenario(work: Path, run: Scenario, quick: bool) -> list[dict]:
    """`clpft run --overwrite --lr 1e-3` over a finished run, killed at each stage of the new run (SIGKILL) and
    interrupted once (SIGINT, Ctrl-C). The old run must never be lost: after a SIGKILL it is complete in the
    run folder or set aside beside it (``.NAME.replaced``), and `--resume` with the new options finishes with
    the new options' uninterrupted result; after a SIGINT it is back in the run folder, file for file."""
    new_options = ["--lr", "1e-3"]
    reference = work / "overwrite-reference"
    if clpft([*run.command(reference), *new_options]).returncode != 0:
        raise SystemExit("overwrite: the uninterrupted run with the new options failed")
    expected = run.result(reference)
    rows = []
    points = OVERWRITE_POINTS[-1:] if quick else OVERWRITE_POINTS
    for point, nth, stage in [*points, ("SIGINT", 0, "overwrite: Ctrl-C")]:
        out = work / f"overwrite-{point}-{nth}"
        if clpft(run.command(out)).returncode != 0:
            raise SystemExit("overwrite: the first run failed")
        old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        aside = out.with_name(f".{out.name}.replaced")
        command = [*run.command(out), *new_options, "--overwrite"]
        if point == "SIGINT":
            # held while it writes its first checkpoint: the old run is set aside, the new one half done
            held = HeldProcess(command, "checkpoint.model_written:1", work / "held")
            held.process.send_signal(signal.SIGINT)
            killed = held.release() == 130
            now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
            row = {"scenario": "run --overwrite", "stage": stage, "point": "SIGINT mid-run", "killed": killed}
            row |= {"resumed": True, "equal": now == old, "leftovers": leftovers(out) + ([aside.name] * aside.exists())}
        else:
            killed = clpft(command, kill=f"{point}:{nth}").returncode == -9
            holder = aside if aside.is_dir() else out
            old_kept = (holder / "metrics.json").is_file() and same_metrics(run.result(holder), run.reference)
            resumed = clpft([*run.command(out), *new_options, "--resume"])
            row = {"scenario": "run --overwrite", "stage": stage, "point": f"{point}:{nth}", "killed": killed}
            row["resumed"] = resumed.returncode == 0 and old_kept
            row["equal"] = resumed.returncode == 0 and same_metrics(run.result(out), expected)
            row["leftovers"] = leftovers(out) + [aside.name] * aside.exists()
            row["old_run_kept"] = old_kept
            if resumed.returncode != 0:
                row["error"] = (resumed.stderr.strip().splitlines() or ["?"])[-1]
        row["survived"] = row["killed"] and row["resumed"] and row["equal"] and not row["leftovers"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def concurrency_scenario(work: Path, data: Path, model: Path, quick: bool = False) -> list[dict]:
    """Two processes writing one output at once (`clpft mine`, then `clpft run`): one writes it, the other is
    refused in one line naming the first; the output is the one an undisturbed process writes."""
    mine_flags = ["--data", str(data), "--model", str(model), "--num-negatives", "2", "--quiet"]
    commands = {
        "mine": lambda out: ["mine", *mine_flags, "--out", str(out / "train.jsonl")],
        "run": run_scenario(work, data, model).command,
    }
    outputs = {
        "mine": lambda out: (out / "train.jsonl").read_bytes(),
        "run": lambda out: json.loads((out / "metrics.json").read_text())["finetuned"]["per_query"],
    }
    rows = []
    for name, command in list(commands.items())[: 1 if quick else None]:
        out, reference = work / f"concurrent-{name}", work / f"concurrent-{name}-reference"
        for folder in (out, reference):
            folder.mkdir(parents=True, exist_ok=True)
        # the first is held at its first encoded batch, with the lock taken and its output not yet written
        first = HeldProcess(command(out), "encode.batch:1", work / "held")
        second = clpft(command(out))
        first_status = first.release()
        clpft(command(reference))
        refused = second.returncode == 2 and "being written by process" in second.stderr
        same = outputs[name](out)
        expected = outputs[name](reference)
        row = {
            "scenario": f"two processes: {name}",
            "stage": "one --out",
            "point": "second process while the first encodes",
            "killed": True,
            "resumed": first_status == 0 and refused,
            "equal": same == expected if name == "mine" else same_metrics(same, expected),
            "leftovers": leftovers(out),
            "second_process_said": (second.stderr.strip().splitlines() or ["(nothing)"])[-1],
        }
        row["survived"] = row["resumed"] and row["equal"] and not row["leftovers"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def harness(work: Path, quick: bool, random_kills: int, seed: int) -> list[dict]:
    data, model = fixture(work)
    rng = random.Random(seed)
    rows = []
    run = run_scenario(work, data, model)
    run.run_reference()
    for point, nth, stage in QUICK_RUN_POINTS if quick else RUN_POINTS:
        rows.append(run.at_point(point, nth, stage))
        print(json.dumps(rows[-1]), flush=True)
    rows += overwrite_scenario(work, run, quick)
    rows += concurrency_scenario(work, data, model, quick)
    if quick:
        return rows
    for index in range(random_kills):
        rows.append(run.at_random_moment(index, rng))
        print(json.dumps(rows[-1]), flush=True)
    ablation = ablation_scenario(work, data, model)
    ablation.run_reference()
    for point, nth, stage in ABLATION_POINTS:
        rows.append(ablation.at_point(point, nth, stage))
        print(json.dumps(rows[-1]), flush=True)
    for index in range(2):
        rows.append(ablation.at_random_moment(index, rng))
        print(json.dumps(rows[-1]), flush=True)
    rows.append(llm_scenario(work, data, model))
    print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    stages: dict[str, list[dict]] = {}
    for row in rows:
        stages.setdefault(f"{row['scenario']}: {row['stage']}", []).append(row)
    lines = [
        "# Fault injection: SIGKILL (or SIGINT), then --resume; two processes on one output",
        "",
        f"`{command}`",
        "",
        "| scenario: stage | kills tried | killed (not finished first) | survived |",
        "|---|---|---|---|",
    ]
    for stage, group in stages.items():
        lines.append(
            f"| {stage} | {len(group)} | {sum(r['killed'] for r in group)} | {sum(r['survived'] for r in group)} |"
        )
    killed = [r for r in rows if r["killed"]]
    lines += [
        "",
        f"In all: {sum(r['survived'] for r in killed)} of {len(killed)} kills survived "
        f"({len(rows) - len(killed)} tries killed nothing: the run finished before the moment or point). "
        "Survived: the resumed run "
        "exits 0, its metrics equal the uninterrupted run's to 1e-6 (train.jsonl byte-identical for mine), and no "
        "temporary entry or incomplete checkpoint is left. For `run --overwrite` also: the old run was kept (complete "
        "in the run folder or set aside beside it) until the resumed new run finished, and after SIGINT it is back "
        "file for file (`equal`). For two processes on one `--out`: `resumed` means the first finished and the "
        "second was refused in one line naming it; `equal`, the output is an undisturbed process's.",
        "",
        "| scenario | point | killed | resumed | equal | leftovers |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['point']} | {r['killed']} | {r['resumed']} | {r['equal']} | "
            f"{', '.join(r['leftovers']) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--quick", action="store_true", help="3 kill points of `clpft run` only")
    parser.add_argument("--random-kills", type=int, default=6, help="random-moment kills of `clpft run`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    from clpft.files import write_json, write_text

    with tempfile.TemporaryDirectory(prefix="clpft-faults-") as scratch:
        rows = harness(Path(args.work or scratch), args.quick, args.random_kills, args.seed)
    command = "python benchmarks/fault_injection.py " + " ".join(sys.argv[1:])
    write_json(Path(args.out).with_suffix(".json"), {"rows": rows})
    write_text(Path(args.out).with_suffix(".md"), markdown(rows, command))
    print(markdown(rows, command))
    if not all(r["survived"] for r in rows if r["killed"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
