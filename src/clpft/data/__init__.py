"""Input data: BEIR-layout retrieval folders and clpft's training-set file (train.jsonl), batches without
false negatives (``batching``), when two texts are one text (``texts``).

May import: the shared modules (errors, files, faults, manifest, models, options, presets, precision)
only (tests/test_imports.py checks every part's imports).
"""

from clpft.data.beir import Dataset, Document, available_splits, load_dataset
from clpft.data.trainset import TrainExample, read_train_jsonl, write_train_jsonl

__all__ = [
    "Dataset",
    "Document",
    "TrainExample",
    "available_splits",
    "load_dataset",
    "read_train_jsonl",
    "write_train_jsonl",
]
