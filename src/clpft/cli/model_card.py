"""A clpft section in the saved model's README.md (sentence-transformers writes the rest): what the
model was tuned from, how, on what, with which result, and how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clpft.evaluation.metrics import LABELS
from clpft.files import write_text


def card_section(
    base_model: str,
    train_config: dict[str, Any],
    data: str | None = None,
    metrics: tuple[dict[str, float], dict[str, float]] | None = None,
    eval_split: str | None = None,
) -> str:
    moe = train_config.get("moe", "none") != "none"
    lines = [
        "## Fine-tuned with clpft",
        "",
        f"Base model: {base_model}. Method: ANCE hard negatives with "
        + (
            "the Contrastive Learning Penalty"
            if train_config.get("loss") == "clp"
            else f"{train_config.get('loss')} loss"
        )
        + (f" (λ = {train_config.get('penalty_weight')})" if train_config.get("loss") == "clp" else "")
        + f", τ = {train_config.get('temperature')}"
        + (
            f", MoE upcycling of the FFN `{train_config['moe']}` layers ({train_config.get('num_experts')} experts, "
            f"top-{train_config.get('experts_per_token')})"
            if moe
            else ""
        )
        + f", trained: {train_config.get('train_only')}; lr {train_config.get('learning_rate')}, "
        f"{train_config.get('epochs')} epochs, batch {train_config.get('batch_size')} "
        f"× accumulation {train_config.get('grad_accum')}, "
        f"{train_config.get('num_negatives')} negatives per query"
        + (f" (preset `{train_config['preset']}`)" if train_config.get("preset") else "")
        + " (Yu 2024, arXiv:2412.17364).",
    ]
    if data:
        lines += ["", f"Training data: `{data}`."]
    if metrics:
        base, tuned = metrics
        lines += ["", f"Retrieval on the `{eval_split}` split:", "", "| metric | base | fine-tuned |", "|---|---|---|"]
        lines += [f"| {label} | {base[k]:.4f} | {tuned[k]:.4f} |" for k, label in LABELS.items() if k in base]
    lines += [
        "",
        "Load it:",
        "",
        "```python",
        "import clpft",
        'model = clpft.load_model("PATH")',
        "# or, without clpft installed:",
        "from sentence_transformers import SentenceTransformer",
        'model = SentenceTransformer("PATH"'
        + (", trust_remote_code=True)  # MoE layers live in modeling_clpft_moe.py" if moe else ")"),
        "```",
        "",
    ]
    return "\n".join(lines)


def add_to_model_card(model_dir: str | Path, section: str) -> None:
    """Insert ``section`` after the README's YAML front matter (or write a README if none). A clpft section
    already there is replaced, so a run resumed after a crash does not write it twice."""
    path = Path(model_dir) / "README.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if _START in text and _END in text:
        text = text[: text.index(_START)] + text[text.index(_END) + len(_END) + 1 :]
        text = text.replace("\n\n\n", "\n\n", 1)
    block = f"{_START}\n{section}{_END}\n"
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        end = text.index("\n---\n", 4) + len("\n---\n")
        text = text[:end] + "\n" + block + "\n" + text[end:].lstrip("\n")
    else:
        text = block + "\n" + text.lstrip("\n")
    write_text(path, text)


_START, _END = "<!-- clpft section -->", "<!-- end of clpft section -->"
