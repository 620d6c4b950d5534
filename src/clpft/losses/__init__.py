"""Training losses, one per file, in sentence-transformers' loss conventions."""

from clpft.losses.clp import CLPLoss, InfoNCELoss

__all__ = ["CLPLoss", "InfoNCELoss"]
