"""How far a reader travels to follow `clpft run`'s options: the files its option objects pass through.

`clpft run` runs in this process under a profiler hook (``sys.setprofile``) from its entry function
(``clpft.cli.main``). A call is on the options' path when one of its arguments is an option object (the parsed
``argparse.Namespace``, or a dataclass of clpft.options or of the pipeline named *Options or *Config, or
QuerySources); each function is read once (its first call; the training loop's repeats are not new
reading). Along that path, in call order:

- a *stay* is a run of consecutive path calls in one file (the reader opens the file once for them);
- a *return* is a stay in a file on the current call chain (the caller's, read on after a callee);
- a *climb back up* is a stay in a file the reader already left that is not on the call chain (it has to
  go back up to a file it had finished with).

    python benchmarks/studies/options_trace.py --data ../shared/data/cranfield --out benchmarks/results/options_trace

Run it with PYTHONPATH pointing at another checkout's src/ to measure that layout (the issue's before/after).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def option_types() -> tuple[type, ...]:
    import clpft.options as options_module

    types: list[type] = [argparse.Namespace]
    modules = [options_module]
    for name in ("clpft.cli.pipeline", "clpft.pipeline"):  # after and before the layout move
        try:
            modules.append(__import__(name, fromlist=["*"]))
        except ImportError:
            pass
    for module in modules:  # the option objects (not helpers such as clpft.options.Range)
        types += [
            v
            for v in vars(module).values()
            if isinstance(v, type)
            and dataclasses.is_dataclass(v)
            and (v.__name__.endswith(("Options", "Config")) or v.__name__ == "QuerySources")
        ]
    return tuple(dict.fromkeys(types))


def trace_run(argv: list[str]) -> list[dict]:
    import clpft
    from clpft.cli import main

    root = str(Path(clpft.__file__).parent)
    tracked = option_types()
    path: list[dict] = []
    seen: set[tuple[str, str]] = set()
    chain: list[str | None] = []  # the file of each clpft frame on the stack (None: not on the options' path)

    def hook(frame, event, _arg):
        code = frame.f_code
        if event == "call":
            if not code.co_filename.startswith(root):
                chain.append(None)
                return
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            carries = any(isinstance(frame.f_locals.get(n), tracked) for n in names)
            where = str(Path(code.co_filename).relative_to(root))
            if carries and (where, code.co_qualname) not in seen:
                seen.add((where, code.co_qualname))
                callers = [f for f in chain if f is not None]
                path.append({"file": where, "function": code.co_qualname, "chain": callers})
            chain.append(where if carries else None)
        elif event == "return" and chain:
            chain.pop()

    sys.setprofile(hook)
    try:
        code = main(argv)
    finally:
        sys.setprofile(None)
    if code != 0:
        raise SystemExit(f"clpft run failed ({code})")
    return path


def count(path: list[dict]) -> dict:
    stays: list[dict] = []
    for call in path:
        if stays and stays[-1]["file"] == call["file"]:
            stays[-1]["functions"].append(call["function"])
            continue
        visited = call["file"] in {s["file"] for s in stays}
        back = visited and call["file"] in call["chain"]
        stays.append(
            {"file": call["file"], "functions": [call["function"]], "climb": visited and not back, "return": back}
        )
    return {
        "stays": len(stays),
        "files": len({s["file"] for s in stays}),
        "climbs_back_up": sum(s["climb"] for s in stays),
        "returns": sum(s["return"] for s in stays),
        "path": stays,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="OUT.json and OUT.md")
    parser.add_argument("--label", default=None, help="what this checkout is (default: its commit)")
    args = parser.parse_args()
    import clpft

    commit = subprocess.run(
        ["git", "-C", str(Path(clpft.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["run", "--data", args.data, "--out", f"{tmp}/run", "--max-train-queries", "8", "--max-steps", "1"]
        result = count(trace_run([*argv, "--quiet"]))
    label = args.label or commit
    out = Path(args.out)
    runs = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    runs[label] = {"commit": commit, "command": "clpft " + " ".join(argv), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")
    lines = [
        "# Following `clpft run`'s options (benchmarks/studies/options_trace.py)",
        "",
        "From `clpft.cli.main`: each function that takes an option object, read once, in call order. A stay: "
        "consecutive such functions in one file; a return: a stay in a file on the current call chain (the "
        "caller's); a climb back up: a stay in a file left before that is not on the call chain.",
        "",
        "| checkout | commit | stays | files | climbs back up | returns |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        counts = [run[k] for k in ("stays", "files", "climbs_back_up", "returns")]
        lines.append(f"| {name} | {run['commit']} | " + " | ".join(map(str, counts)) + " |")
    for name, run in runs.items():
        lines += ["", f"## {name}: the path", ""]
        for number, stay in enumerate(run["path"], 1):
            mark = " (return)" if stay["return"] else " (climb back up)" if stay["climb"] else ""
            lines.append(f"{number}. `{stay['file']}`{mark}: {', '.join(stay['functions'])}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 8 + len(runs)]))


if __name__ == "__main__":
    main()
