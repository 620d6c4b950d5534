"""clpft: fine-tune text-embedding models for retrieval with the Contrastive Learning Penalty.

Yu (2024), "Efficient fine-tuning methodology of text embedding models for information retrieval:
contrastive learning penalty (CLP)", arXiv:2412.17364.
"""

from __future__ import annotations

__version__ = "0.2.0"


def load_model(name_or_path=None, device=None, trust_remote_code=False):
    """Load a SentenceTransformer (the packaged all-MiniLM-L6-v2 when None). See clpft.models.load_model."""
    from clpft.models import load_model as _load_model

    return _load_model(name_or_path, device=device, trust_remote_code=trust_remote_code)


__all__ = ["__version__", "load_model"]
