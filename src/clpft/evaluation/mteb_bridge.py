"""``clpft eval --mteb TASK``: hand a (fine-tuned) model to the ``mteb`` package, when it is installed.

clpft's own evaluation answers "did tuning help on my data"; MTEB answers "what did it cost
elsewhere". The model is passed as the SentenceTransformer it is (MoE models included), so MTEB
encodes with its query/document prompts exactly as it would for any sentence-transformers model.
MTEB downloads its task data itself: this needs network access (or MTEB's own cache).
"""

from __future__ import annotations

from typing import Any

from clpft.errors import ClpftError


def run_mteb(model: Any, task_names: list[str]) -> dict[str, Any]:
    """Evaluate ``model`` on the named MTEB tasks; returns {task: {"main_score": float, "scores": {...}}}."""
    try:
        import mteb
    except ImportError as error:
        raise ClpftError("--mteb needs the mteb package: pip install mteb") from error
    try:
        tasks = mteb.get_tasks(tasks=task_names)
    except (KeyError, ValueError) as error:
        raise ClpftError(f"--mteb: unknown task ({error})") from error
    found = {getattr(getattr(t, "metadata", None), "name", None) for t in tasks}
    missing = [name for name in task_names if name not in found]
    if missing:
        raise ClpftError(f"--mteb: unknown task {', '.join(missing)} (see `mteb available_tasks`)")
    results = mteb.evaluate(model, tasks=tasks)
    summary: dict[str, Any] = {}
    for task_result in getattr(results, "task_results", results):
        scores = getattr(task_result, "scores", {})
        summary[task_result.task_name] = {"main_score": float(task_result.get_score()), "scores": scores}
    return summary
