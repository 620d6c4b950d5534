"""Shared fixtures: tiny randomly initialised encoders (no downloads) and a tiny BEIR dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORDS = (
    "the a of and to in is for on with what how does cause protein cell cells gene genes cancer risk "
    "vitamin heart blood brain study patients mice increase decrease effect disease treatment drug "
    "wing flow air pressure shock boundary layer heat speed high low number water light sun moon"
).split()


def _vocab() -> dict[str, int]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


FAMILIES = (
    "bert",
    "xlm-roberta",
    "mpnet",
    "distilbert",
    "modernbert",
    "electra",
    "deberta_v2",
    "qwen3",
    "gemma3",
    "gpt2",
)


def tiny_config(family: str, vocab_size: int):
    """A 2-layer, 32-wide random config of ``family`` (transformers' model type), dropout off."""
    import transformers

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=80,
    )
    bert_like = dict(common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    special = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    decoder = dict(common, num_key_value_heads=1, head_dim=16, **special)
    configs = {
        "bert": lambda: transformers.BertConfig(**bert_like),
        "xlm-roberta": lambda: transformers.XLMRobertaConfig(**bert_like, **special),
        "mpnet": lambda: transformers.MPNetConfig(**bert_like),
        "electra": lambda: transformers.ElectraConfig(**bert_like, embedding_size=32),
        "deberta_v2": lambda: transformers.DebertaV2Config(**bert_like),
        "distilbert": lambda: transformers.DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=48,
            max_position_embeddings=80,
            dropout=0.0,
            attention_dropout=0.0,
        ),
        "modernbert": lambda: transformers.ModernBertConfig(
            **common, **special, cls_token_id=2, sep_token_id=3, attention_dropout=0.0, mlp_dropout=0.0
        ),
        "qwen3": lambda: transformers.Qwen3Config(**decoder),
        "gemma3": lambda: transformers.Gemma3TextConfig(**decoder),
        # GPT-2's projections are Conv1D layers, not nn.Linear: the one family here MoE upcycling refuses
        "gpt2": lambda: transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=80),
    }
    return configs[family]()


def make_tiny_model(folder: Path, family: str = "bert", seed: int = 0):
    """A SentenceTransformer over a 2-layer random model of ``family`` (one of ``FAMILIES``), mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import AutoModel, BertTokenizerFast

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=_vocab(), do_lower_case=True)
    encoder = AutoModel.from_config(tiny_config(family, tokenizer.vocab_size + 2))
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=64)
    return SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT SentenceTransformer folder (dense)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    model = make_tiny_model(folder / "hf")
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture
def tiny_model(tiny_model_dir):
    import clpft

    return clpft.load_model(tiny_model_dir)


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[tuple]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    """12 documents, 8 queries; train queries q1-q6, test queries q7-q8. d1 answers q1 and q2."""
    return make_tiny_beir(tmp_path / "tiny")


def make_tiny_beir(folder: Path) -> Path:
    """The ``tiny_beir`` dataset, written to ``folder``."""
    topics = [
        "protein cell",
        "cancer risk",
        "vitamin heart",
        "blood brain",
        "wing flow",
        "air pressure",
        "shock boundary layer",
        "heat speed",
        "water light",
        "sun moon",
        "gene mice",
        "drug treatment",
    ]
    corpus = [{"_id": f"d{i + 1}", "title": t, "text": f"the study of {t} in patients"} for i, t in enumerate(topics)]
    queries = [{"_id": f"q{i + 1}", "text": f"what is {topics[i]}"} for i in range(8)]
    train = [
        ("q1", "d1", 1),
        ("q2", "d1", 1),
        ("q2", "d2", 1),
        ("q3", "d3", 1),
        ("q4", "d4", 2),
        ("q5", "d5", 1),
        ("q6", "d6", 1),
        ("q6", "d3", 1),
    ]
    test = [("q7", "d7", 1), ("q8", "d8", 1), ("q8", "d9", 0)]
    return write_beir(folder, corpus, queries, {"train": train, "test": test})


@pytest.fixture
def mined(tiny_model_dir, tiny_beir, tmp_path) -> Path:
    """`clpft mine` on the tiny dataset with the tiny model: train.jsonl with 2 negatives per query."""
    from clpft.cli import main

    path = tmp_path / "train.jsonl"
    args = [
        "mine",
        "--data",
        str(tiny_beir),
        "--out",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--num-negatives",
        "2",
    ]
    assert main([*args, "--quiet"]) == 0
    return path
