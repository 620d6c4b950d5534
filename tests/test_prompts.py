"""A model's own sentence-transformers configuration (prompts, pooling, normalisation, max length) is what
clpft encodes, trains and saves with: a decoder embedder's last-token pooling and query prompt included."""

from __future__ import annotations

import json

import numpy as np
import torch

import clpft
from clpft import precision
from clpft.data import TrainExample
from clpft.mining.encode import encode_texts
from clpft.models import save_model
from clpft.training import TrainConfig, train_model
from clpft.training.collator import CLPDataCollator
from conftest import make_tiny_model

PROMPTS = {"query": "what is the ", "document": "a study of "}


def prompted_decoder(tmp_path):
    """A tiny Qwen3 embedder as decoder embedders ship: last-token pooling, normalised, with prompts."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    plain = make_tiny_model(tmp_path / "hf", family="qwen3")
    model = SentenceTransformer(
        modules=[plain[0], Pooling(32, "lasttoken"), Normalize()], prompts=PROMPTS, device="cpu"
    )
    model.max_seq_length = 40
    folder = tmp_path / "prompted"
    model.save(str(folder))
    return folder


def test_queries_get_the_query_prompt_and_documents_the_document_prompt(tmp_path):
    model = clpft.load_model(prompted_decoder(tmp_path))
    assert model.prompts["query"] == PROMPTS["query"] and model.max_seq_length == 40
    texts = ["cancer risk", "heart blood flow"]
    with precision.use("fp32"):  # exact comparisons: no bf16 autocast, whatever this CPU computes natively
        queries = encode_texts(model, texts, "query", max_tokens=40)
        documents = encode_texts(model, texts, "document", max_tokens=40)
    with_prompt = model.encode([PROMPTS["query"] + t for t in texts], normalize_embeddings=True)
    assert np.abs(queries - with_prompt).max() < 1e-5
    assert np.abs(documents - model.encode([PROMPTS["document"] + t for t in texts])).max() < 1e-5
    assert np.abs(queries - documents).max() > 1e-3  # the two prompts differ, so do the embeddings

    collator = CLPDataCollator.for_model(model, 40, 40)
    batch = collator(
        [{"query": "cancer risk", "positive": "gene cells", "negative_1": "wing flow", "own_queries": [[]]}]
    )
    expected = model.tokenizer(PROMPTS["query"] + "cancer risk")["input_ids"]
    assert batch["query_input_ids"][0][: len(expected)].tolist() == expected


def test_training_keeps_the_models_pooling_prompts_and_length(tmp_path):
    model = clpft.load_model(prompted_decoder(tmp_path))
    rows = [
        TrainExample(f"cause of {w}", [f"a study of {w}"], [f"a study of {o}" for o in others], [[], []])
        for w, others in [("cancer", ("heart", "wing")), ("heart", ("cancer", "moon")), ("wing", ("sun", "heart"))]
    ]
    config = TrainConfig(num_negatives=2, batch_size=1, grad_accum=1, max_steps=2, val_fraction=0.0, precision="fp32")
    train_model(model, rows, config, show_progress=False)
    folder = save_model(model, tmp_path / "tuned")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "lasttoken"
    saved = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == PROMPTS["query"] and saved["prompts"]["document"] == PROMPTS["document"]
    reloaded = clpft.load_model(folder)
    assert reloaded.max_seq_length == 40
    assert torch.allclose(
        reloaded.encode(["cancer"], convert_to_tensor=True, prompt_name="query"),
        model.encode(["cancer"], convert_to_tensor=True, prompt_name="query"),
        atol=1e-5,
    )
