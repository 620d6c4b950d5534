"""Dense-retrieval evaluation: retrieve with a model, score with pytrec_eval."""

from clpft.evaluation.metrics import LABELS, METRICS, compute_metrics
from clpft.evaluation.retrieval import encode_corpus, evaluate_model, retrieve

__all__ = ["LABELS", "METRICS", "compute_metrics", "encode_corpus", "evaluate_model", "retrieve"]
