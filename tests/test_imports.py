"""The package's import graph has no cycle: every import of a clpft module, at module level or inside a
function, read from the source; a package's own imports are its __init__'s."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (SRC / "clpft").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_clpft_modules():
    graph = import_graph()
    assert "clpft.ablation" in graph["clpft.cli.commands"]  # the walk sees function-level imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_walk_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


SHARED = {"clpft", "errors", "faults", "files", "manifest", "models", "options", "presets", "precision"}
# What each part of the method may import besides the shared modules (each package's __init__ says the same).
ALLOWED = {
    "data": set(),
    "ownqueries": {"data"},
    "mining": {"data", "ownqueries"},
    "losses": set(),
    "moe": set(),
    "evaluation": {"data", "mining"},
    "training": {"data", "mining", "losses", "moe", "evaluation"},
    "ablation": {"data", "evaluation", "cli"},  # it runs clpft subcommands, and reads their options' parser
    "cli": {"data", "ownqueries", "mining", "losses", "moe", "evaluation", "training", "ablation"},
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "clpft"


def test_each_part_imports_only_what_it_may():
    graph = import_graph()
    assert set(ALLOWED) | SHARED >= {part_of(m) for m in graph}, "a new part: say here what it may import"
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if part_of(module) in ALLOWED and part_of(target) not in SHARED | ALLOWED[part_of(module)] | {part_of(module)}
    )
    assert not wrong, wrong
    # the shared modules import each other and, for loading a saved MoE model, clpft.moe: never a part's code
    shared_wrong = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        for t in ts
        if part_of(m) in SHARED and part_of(t) not in SHARED | {"moe"}
    )
    assert not shared_wrong, shared_wrong
