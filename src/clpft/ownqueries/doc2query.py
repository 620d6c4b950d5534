"""Queries from a local seq2seq doc2query model (e.g. a T5 doc2query folder), batched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from clpft.data.beir import Document
from clpft.errors import ClpftError
from clpft.ownqueries.base import GenerationSummary, QueryGenerator, clean_queries


class Doc2QueryGenerator(QueryGenerator):
    name = "doc2query"

    def __init__(
        self,
        model_path: str,
        batch_size: int = 16,
        max_input_tokens: int = 512,
        max_new_tokens: int = 32,
        top_k: int = 10,
        seed: int = 42,
        device: str | None = None,
    ) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        if not model_path:
            raise ClpftError("the doc2query backend needs --doc2query-model (a local seq2seq model folder or hub id)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model_path, use_safetensors=True)
        except OSError as error:
            raise ClpftError(f"cannot load doc2query model {model_path}: {str(error).splitlines()[0]}") from error
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        weights = Path(model_path) / "model.safetensors"
        fingerprint = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else model_path
        self._identity = f"doc2query|{fingerprint}|top_k={top_k}|seed={seed}|max_new_tokens={max_new_tokens}"
        self.batch_size, self.max_input_tokens, self.max_new_tokens = batch_size, max_input_tokens, max_new_tokens
        self.top_k, self.seed = top_k, seed

    def identity(self) -> str:
        return self._identity

    @torch.inference_mode()
    def generate(self, documents: list[Document], n: int, summary: GenerationSummary) -> list[list[str] | None]:
        torch.manual_seed(self.seed)
        results: list[list[str] | None] = []
        for start in range(0, len(documents), self.batch_size):
            batch = documents[start : start + self.batch_size]
            inputs = self.tokenizer(
                [d.full_text for d in batch],
                truncation=True,
                max_length=self.max_input_tokens,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            # Ask for a few extra samples: duplicates and copies are removed afterwards.
            samples = n + 2
            output = self.model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                do_sample=True,
                top_k=self.top_k,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=samples,
            )
            texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
            for i, doc in enumerate(batch):
                results.append(clean_queries(texts[i * samples : (i + 1) * samples], doc.full_text, n))
        return results
