"""Queries from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...),
through the ``openai`` client (``pip install clpft[llm]``).

The client does the HTTP work: the request, its timeout, and retries with exponential backoff on 408 /
409 / 429 / 5xx / timeouts / dropped connections, honouring Retry-After. clpft adds what the client
does not know: bounded concurrency (a thread pool over one client), a hard cap on HTTP calls retries
included (an httpx request hook counts every attempt and stops the next one past the cap), a retry of
answers that arrive but cannot be read, and parsing of answers whether they come as JSON, a numbered list
or a list wrapped in chatter. The API key comes from the environment (CLPFT_API_KEY, else
OPENAI_API_KEY) and is never logged or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clpft.data.beir import Document
from clpft.errors import ClpftError
from clpft.ownqueries.base import GenerationSummary, QueryGenerator, clean_queries

DEFAULT_PROMPT = """Write {n} short, realistic search queries that a person could type into a search engine \
to find the document below. Write them in the document's own language. Each query must be answered \
by the document, must not copy a sentence from it, and should have fewer than 15 words.
Answer with a JSON list of strings and nothing else.

Document:
{document}"""


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


def _openai():
    try:
        import openai
    except ImportError:
        raise ClpftError("the llm backend needs the openai package: pip install 'clpft[llm]'") from None
    return openai


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
        max_document_chars: int = 6000,
        api_key: str | None = None,
    ) -> None:
        if not base_url or not model:
            raise ClpftError("the llm backend needs --llm-base-url and --llm-model")
        template = prompt_template or DEFAULT_PROMPT
        if "{document}" not in template:
            raise ClpftError("the LLM prompt template must contain {document} (and may contain {n})")
        root = base_url.rstrip("/")
        self.url = root if root.endswith("/chat/completions") else root + "/chat/completions"
        self.model = model
        self.template = template
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.max_calls = max_calls
        self.max_document_chars = max_document_chars
        self._key = api_key if api_key is not None else api_key_from_env()
        self._lock = threading.Lock()
        self._calls = 0
        self._summary: GenerationSummary | None = None
        openai = _openai()

        class CallCapReached(openai.OpenAIError):
            """Raised by the request hook past --max-llm-calls; the client passes OpenAIErrors on unretried."""

        self._cap_reached = CallCapReached
        self._client = openai.OpenAI(
            base_url=root.removesuffix("/chat/completions"),
            api_key=self._key or "none",  # local servers take any key; the client insists on one
            timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._count_call]}),
        )

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

    def _count_call(self, request) -> None:
        """The client's every HTTP attempt passes here first: count it, and refuse one past the cap."""
        with self._lock:
            if self.max_calls is not None and self._calls >= self.max_calls:
                raise self._cap_reached(f"stopped at --max-llm-calls {self.max_calls}")
            self._calls += 1
            if self._summary is not None:
                self._summary.calls += 1
                self._summary.retries += request.headers.get("x-stainless-retry-count", "0") != "0"

    def _one(self, document: str, n: int, summary: GenerationSummary) -> list[str] | None:
        openai = _openai()
        prompt = self.template.replace("{n}", str(n)).replace("{document}", document[: self.max_document_chars])
        for attempt in range(self.max_retries + 1):  # the client retries HTTP failures; this, unreadable answers
            if attempt:
                with self._lock:
                    summary.retries += 1  # the hook counted the call as a first try
            try:
                answer = self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0.7
                )
                content = answer.choices[0].message.content
                usage = answer.usage
            except self._cap_reached as error:
                self._note(summary, str(error))
                break
            except openai.APIStatusError as error:
                self._note(summary, f"HTTP {error.status_code} from {self.url} after the client's retries")
                break
            except openai.APIConnectionError as error:  # APITimeoutError included
                self._note(summary, f"{type(error).__name__} from {self.url} after the client's retries")
                break
            except (json.JSONDecodeError, AttributeError, IndexError, KeyError, TypeError, ValueError):
                if attempt == self.max_retries:
                    self._note(summary, f"malformed answer after {attempt + 1} tries")
                continue
            if not isinstance(content, str):
                if attempt == self.max_retries:
                    self._note(summary, f"malformed answer after {attempt + 1} tries")
                continue
            with self._lock:
                summary.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                summary.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            return parse_queries(content)
        with self._lock:
            summary.failures += 1
        return None

    def _note(self, summary: GenerationSummary, text: str) -> None:
        with self._lock:
            if len(summary.notes) < 5 and redact(text, self._key) not in summary.notes:
                summary.notes.append(redact(text, self._key))

    def generate(self, documents: list[Document], n: int, summary: GenerationSummary) -> list[list[str] | None]:
        def work(doc: Document) -> list[str] | None:
            raw = self._one(doc.full_text, n, summary)
            return None if raw is None else clean_queries(raw, doc.full_text, n)

        self._summary = summary
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                return list(pool.map(work, documents))
        finally:
            self._summary = None
