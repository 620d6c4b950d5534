"""Training losses, one per file, in sentence-transformers' loss conventions."""

from clpft.losses.cached_clp import CachedCLPLoss
from clpft.losses.clp import CLPLoss, InfoNCELoss

__all__ = ["CLPLoss", "CachedCLPLoss", "InfoNCELoss"]
