"""Data selection (the method's step 1): encode, search, mine hard (or random) negatives, and attach the
negatives' own queries (step 2, from clpft.ownqueries).

May import: clpft.data, clpft.ownqueries and the shared modules
(errors, files, faults, manifest, models, options, presets, precision).
"""

from clpft.mining.encode import encode_texts
from clpft.mining.negatives import MiningStats, mine_negatives
from clpft.mining.search import exact_search

__all__ = ["MiningStats", "encode_texts", "exact_search", "mine_negatives"]
