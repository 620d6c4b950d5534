"""Queries from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...).

Robust by construction: bounded concurrency, a timeout per request, retries with exponential backoff
and jitter on 429 / 5xx / timeouts / broken answers, a hard cap on the number of calls, and answers
parsed whether they come as JSON, a numbered list or a list wrapped in chatter. The API key comes
from the environment (CLPFT_API_KEY, else OPENAI_API_KEY) and is never logged or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clpft.data.beir import Document
from clpft.errors import ClpftError
from clpft.negqueries.base import GenerationSummary, QueryGenerator, clean_queries

DEFAULT_PROMPT = """Write {n} short, realistic search queries that a person could type into a search engine \
to find the document below. Write them in the document's own language. Each query must be answered \
by the document, must not copy a sentence from it, and should have fewer than 15 words.
Answer with a JSON list of strings and nothing else.

Document:
{document}"""

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def api_key_from_env() -> str | None:
    return os.environ.get("CLPFT_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•·]|q\d*\s*[:.)])\s*", re.IGNORECASE)


def parse_queries(text: str) -> list[str]:
    """Queries from a model's answer: a JSON list (or {"queries": [...]}) anywhere in the text,
    else one query per line with numbering, bullets and quotes removed and preamble lines dropped."""
    text = text.strip()
    fenced = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
    for candidate in (fenced, fenced[fenced.find("[") : fenced.rfind("]") + 1] if "[" in fenced else ""):
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            value = value.get("queries") or next((v for v in value.values() if isinstance(v, list)), [])
        if isinstance(value, list):
            return [str(v) for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
    queries = []
    for line in fenced.splitlines():
        line = line.strip()
        if not line or line.endswith(":") or line in ("[", "]"):
            continue
        line = _NUMBERING.sub("", line).strip().strip(",").strip().strip("\"“”'").strip()
        if line:
            queries.append(line)
    return queries


class LLMGenerator(QueryGenerator):
    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        prompt_template: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 4,
        max_calls: int | None = None,
        backoff: float = 1.0,
        max_document_chars: int = 6000,
        api_key: str | None = None,
    ) -> None:
        if not base_url or not model:
            raise ClpftError("the llm backend needs --llm-base-url and --llm-model")
        template = prompt_template or DEFAULT_PROMPT
        if "{document}" not in template:
            raise ClpftError("the LLM prompt template must contain {document} (and may contain {n})")
        self.url = base_url.rstrip("/") + (
            "" if base_url.rstrip("/").endswith("/chat/completions") else "/chat/completions"
        )
        self.model = model
        self.template = template
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_calls = max_calls
        self.backoff = backoff
        self.max_document_chars = max_document_chars
        self._key = api_key if api_key is not None else api_key_from_env()
        self._lock = threading.Lock()
        self._calls = 0

    @classmethod
    def from_prompt_file(cls, path: str | None, **kwargs) -> LLMGenerator:
        template = None
        if path:
            try:
                template = Path(path).read_text(encoding="utf-8")
            except OSError as error:
                raise ClpftError(f"{path}: cannot read prompt template ({error.strerror})") from error
        return cls(prompt_template=template, **kwargs)

    def identity(self) -> str:
        return f"llm|{self.model}|{hashlib.sha256(self.template.encode()).hexdigest()[:16]}"

    def _take_call(self) -> bool:
        with self._lock:
            if self.max_calls is not None and self._calls >= self.max_calls:
                return False
            self._calls += 1
            return True

    def _request(self, document: str, n: int) -> tuple[list[str], dict]:
        prompt = self.template.replace("{n}", str(n)).replace("{document}", document[: self.max_document_chars])
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7})
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body.encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
        content = payload["choices"][0]["message"]["content"]
        return parse_queries(content or ""), payload.get("usage") or {}

    def _one(self, document: str, n: int, summary: GenerationSummary) -> list[str] | None:
        for attempt in range(self.max_retries + 1):
            if not self._take_call():
                with self._lock:
                    if not any("max-llm-calls" in note for note in summary.notes):
                        summary.notes.append(f"stopped at --max-llm-calls {self.max_calls}")
                return None
            retry_after = None
            with self._lock:
                summary.calls += 1
                summary.retries += attempt > 0
            try:
                queries, usage = self._request(document, n)
                with self._lock:
                    summary.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    summary.completion_tokens += int(usage.get("completion_tokens") or 0)
                return queries
            except urllib.error.HTTPError as error:
                if error.code not in RETRYABLE_STATUS:
                    self._note(summary, f"HTTP {error.code} from {self.url}")
                    break
                retry_after = error.headers.get("Retry-After") if error.headers else None
                reason = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError):
                reason = "malformed answer"
            if attempt == self.max_retries:
                self._note(summary, f"{reason} after {attempt + 1} tries")
                break
            delay = self.backoff * (2**attempt) * (0.5 + random.random())
            if retry_after:
                try:
                    delay = max(delay, min(float(retry_after), 60.0))
                except ValueError:
                    pass
            time.sleep(delay)
        with self._lock:
            summary.failures += 1
        return None

    def _note(self, summary: GenerationSummary, text: str) -> None:
        with self._lock:
            if len(summary.notes) < 5:
                summary.notes.append(redact(text, self._key))

    def generate(self, documents: list[Document], n: int, summary: GenerationSummary) -> list[list[str] | None]:
        def work(doc: Document) -> list[str] | None:
            raw = self._one(doc.full_text, n, summary)
            return None if raw is None else clean_queries(raw, doc.full_text, n)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(work, documents))
