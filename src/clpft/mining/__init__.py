"""Data selection: encode, search, mine hard (or random) negatives, and find negatives' own queries."""

from clpft.mining.encode import encode_texts
from clpft.mining.negatives import MiningStats, mine_negatives
from clpft.mining.search import exact_search

__all__ = ["MiningStats", "encode_texts", "exact_search", "mine_negatives"]
