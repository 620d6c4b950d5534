"""What a command prints: logging with secrets redacted, and --quiet through the libraries' own switches."""

from __future__ import annotations

import logging

from clpft.errors import redact_secrets


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(quiet: bool) -> None:
    if quiet:
        silence_progress_bars()
    logging.basicConfig(format="clpft: %(message)s", level=logging.WARNING if quiet else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactSecrets())
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not quiet else logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars: noise even without --quiet


def silence_progress_bars() -> None:
    """--quiet: every library's own switch for its progress bars (clpft's own bars and the trainer's follow
    ``show_progress`` / ``disable_tqdm``; the one bar sentence-transformers' trainer draws without a switch,
    its model card's widget examples, is not drawn because clpft gives the card its widget first)."""
    import datasets
    import huggingface_hub.utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
