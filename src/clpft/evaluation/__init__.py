"""Dense-retrieval evaluation (the method's step 5): retrieve with a model, score with pytrec_eval,
paired tests and intervals (``statistics``), MTEB (``mteb_bridge``).

May import: clpft.data, clpft.mining (encoding) and the shared modules
(errors, files, faults, manifest, models, options, presets, precision).
"""

from clpft.evaluation.metrics import LABELS, METRICS, compute_metrics

__all__ = ["LABELS", "METRICS", "compute_metrics", "encode_corpus", "evaluate_model", "retrieve"]


def __getattr__(name: str):
    # Retrieval needs torch and sentence-transformers (seconds to import); the command line's option
    # checks and help only need the metric names, so retrieval is imported when first used.
    if name in ("encode_corpus", "evaluate_model", "retrieve"):
        from clpft.evaluation import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
