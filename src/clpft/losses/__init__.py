"""Training losses (the method's step 3), one per file, in sentence-transformers' loss conventions.

May import: the shared modules (errors, files, faults, manifest, models, options, presets, precision) only.
"""

from clpft.losses.cached_clp import CachedCLPLoss
from clpft.losses.clp import CLPLoss, InfoNCELoss

__all__ = ["CLPLoss", "CachedCLPLoss", "InfoNCELoss"]
