"""CLP with gradient caching (GradCache): the same loss and gradients as ``CLPLoss``, in bounded memory.

The batch is embedded in mini-batches without a graph, the loss is computed and back-propagated up
to the embeddings, and each mini-batch is then embedded again with its graph and given its cached
gradient (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
arXiv:2101.06983). Memory is bounded by ``mini_batch_size`` rows at a time, so large batches, and the
in-batch negatives they bring, fit a small GPU or a CPU. sentence-transformers' ``CachedLossMixin``
does the caching; this file only says how CLP is computed from the cached embeddings.

Inputs: as ``CLPLoss``. Example::

    loss = CachedCLPLoss(model, penalty_weight=0.1, temperature=0.02, mini_batch_size=16)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor

from clpft.losses.clp import CLPLoss


class CachedCLPLoss(CachedLossMixin, CLPLoss):
    def __init__(
        self,
        model: SentenceTransformer,
        penalty_weight: float = 0.1,
        temperature: float = 0.02,
        mini_batch_size: int = 16,
        hardness_strength: float = 0.0,
    ) -> None:
        CLPLoss.__init__(
            self, model, penalty_weight=penalty_weight, temperature=temperature, hardness_strength=hardness_strength
        )
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be at least 1, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        features = list(sentence_features)
        num_negatives = labels.shape[1] if labels is not None and labels.dim() == 3 else len(features) - 2
        if not self.uses_own_queries:
            features = features[: 2 + num_negatives]
        self._num_columns = 2 + num_negatives
        return self.forward_cached(features, labels)

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        columns = [torch.cat(parts) for parts in reps]
        own_queries = columns[self._num_columns] if len(columns) > self._num_columns else None
        loss = self.compute_loss_from_embeddings(columns[: self._num_columns], own_queries, labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self):
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}
