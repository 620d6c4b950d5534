"""Input data: BEIR-layout retrieval folders and clpft's training-set file (train.jsonl)."""

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
