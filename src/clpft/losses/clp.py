"""Contrastive Learning Penalty loss (Yu, 2024): ``CLPLoss`` (and ``InfoNCELoss``, CLP with λ = 0).

The contract (formula, arguments, inputs, example) is on the class, so ``help(CLPLoss)`` shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

try:  # sentence-transformers >= 6: one forward pass for all candidate columns
    from sentence_transformers.base.losses.merged_forward import embed_columns
except ImportError:  # pragma: no cover

    def embed_columns(model, features_list):
        return [model(features)["sentence_embedding"] for features in features_list]


class CLPLoss(nn.Module):
    """Contrastive Learning Penalty (Yu, 2024): InfoNCE with in-batch negatives, plus a penalty that keeps each
    hard negative close to the queries it is itself relevant to.

    Formula, for a batch of B queries q_i, each with a positive p_i and k hard negatives n_i1..n_ik::

        s(q, d)  = cos(q, d) / τ   (+ α · sg(cos(q_i, n_ij)) for q_i's own hard negatives, when α > 0)
        InfoNCE  = mean_i  -log( exp s(q_i, p_i) / Σ_{d ∈ C} exp s(q_i, d) )
                   C = every positive and every negative of the batch (under DDP: of the global batch)
        P        = 1 - mean over negatives n with a known query of  mean_{m ∈ Q(n)} cos(n, m)
        L        = (1 - λ) · InfoNCE + λ · P

    Q(n) are the negative's own queries (from the training qrels, or generated). Plain contrastive
    learning pushes a hard negative away from the query and with it away from the queries it answers;
    the penalty keeps it near them. Negatives with no known query are masked out of P; a batch where none
    is known has P = 0. Every example and every negative counts (the paper's public code reads only the
    first example of a batch), for any B and k.

    Hardness weighting (α, ``hardness_strength``; 0, off, by default): each query's own hard negatives get
    α times their (gradient-stopped) cosine added to their logit, so the harder a negative already is, the
    more of the softmax it takes: the weighting of EmbeddingGemma (Schechter Vera et al. 2025, α 5), which
    sentence-transformers' MultipleNegativesRankingLoss calls ``hardness_mode="hard_negatives"``. The other
    rows' candidates (in-batch negatives) and the positives are left as they are.

    Reference: Jeongsu Yu, "Efficient fine-tuning methodology of text embedding models for information
    retrieval: contrastive learning penalty (CLP)", arXiv:2412.17364, 2024.

    Args:
        model: the SentenceTransformer being trained.
        penalty_weight: λ in [0, 1] (the paper: 0.1); 0 gives plain InfoNCE.
        temperature: τ > 0 (the paper: 0.02, a scale of 50).
        hardness_strength: α >= 0 (0: off), the hardness weighting of each query's own hard negatives.
        gather_across_devices: under DDP, score against every process's candidates (see ``__init__``).

    Inputs (what ``clpft.training.collator.CLPDataCollator`` makes of train.jsonl rows):

        +--------------------------------------------+------------------------------------------------+
        | Texts (columns, in order)                  | Labels                                         |
        +============================================+================================================+
        | query, positive, negative_1 .. negative_k, | long tensor (B, k, M): entry [i, j, m] is the   |
        | and the negatives' own queries (the batch's | row of the own-query column holding the m-th    |
        | distinct own queries, one column)           | own query of n_ij, -1 where there is none       |
        +--------------------------------------------+------------------------------------------------+

    ``last_terms`` holds the last batch's ``{"infonce": ..., "penalty": ...}`` (detached), which clpft's
    trainer logs beside the loss.

    Example::

        import clpft
        from clpft.losses import CLPLoss
        from clpft.training.collator import CLPDataCollator, build_dataset
        from sentence_transformers import SentenceTransformerTrainer

        model = clpft.load_model()
        dataset, _ = build_dataset(examples, num_negatives=4)  # examples: clpft.data.read_train_jsonl(...)
        loss = CLPLoss(model, penalty_weight=0.1, temperature=0.02)
        trainer = SentenceTransformerTrainer(model=model, train_dataset=dataset, loss=loss,
                                             data_collator=CLPDataCollator.for_model(model))
        trainer.train()
    """

    def __init__(
        self,
        model: SentenceTransformer,
        penalty_weight: float = 0.1,
        temperature: float = 0.02,
        gather_across_devices: bool = True,
        hardness_strength: float = 0.0,
    ) -> None:
        """
        Args:
            model: the SentenceTransformer being trained.
            penalty_weight: λ, the weight of the penalty (the paper: 0.1). 0 gives plain InfoNCE.
            temperature: τ, dividing cosine similarities (the paper: 0.02; scale = 1/τ = 50).
            hardness_strength: α, added times the gradient-stopped cosine to the logit of each query's own
                hard negatives (0: off; EmbeddingGemma used 5).
            gather_across_devices: under DDP (torchrun / accelerate launch), every process's queries are
                scored against the positives and negatives of *all* processes (the global batch), gathered
                *with* gradients (as sentence-transformers' MultipleNegativesRankingLoss does), and the
                penalty is averaged over the global batch's known negatives. Then the mean of the
                processes' losses is the single-process loss on the global batch, and every input's
                gradient (queries, positives, negatives, own queries), divided by the number of processes
                as DDP's averaging does, is its single-process gradient on the global batch. Each
                process's penalty value (``last_terms["penalty"]``) is the global batch's penalty. No
                effect in a single process.
        """
        super().__init__()
        if not 0.0 <= penalty_weight <= 1.0:
            raise ValueError(f"penalty_weight must be in [0, 1], got {penalty_weight}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if hardness_strength < 0:
            raise ValueError(f"hardness_strength must be >= 0, got {hardness_strength}")
        self.model = model
        self.penalty_weight = penalty_weight
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices
        self.hardness_strength = hardness_strength
        self.last_terms: dict[str, Tensor] = {}  # the last batch's InfoNCE and penalty, detached, for logging

    @property
    def uses_own_queries(self) -> bool:
        return self.penalty_weight > 0

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        features = list(sentence_features)
        num_negatives = labels.shape[1] if labels is not None and labels.dim() == 3 else len(features) - 2
        columns = features[: 2 + num_negatives]
        embeddings = embed_columns(self.model, columns)
        own_query_embeddings = None
        if len(features) > 2 + num_negatives and self.uses_own_queries:
            own_query_embeddings = self.model(features[2 + num_negatives])["sentence_embedding"]
        return self.compute_loss_from_embeddings(embeddings, own_query_embeddings, labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], own_query_embeddings: Tensor | None, labels: Tensor | None
    ) -> Tensor:
        """``embeddings`` = [queries (B, d), positives (B, d), negatives_1 (B, d), ..., negatives_k (B, d)]."""
        contrastive = self.infonce(embeddings)
        if not self.uses_own_queries:
            return contrastive
        penalty = self.penalty(embeddings[2:], own_query_embeddings, labels)
        self.last_terms = {"infonce": contrastive.detach(), "penalty": penalty.detach()}
        return (1.0 - self.penalty_weight) * contrastive + self.penalty_weight * penalty

    def _world(self) -> tuple[int, int]:
        """(rank, world size) when gathering across processes, else (0, 1)."""
        if self.gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def infonce(self, embeddings: list[Tensor]) -> Tensor:
        queries = F.normalize(embeddings[0], dim=-1)
        candidates = F.normalize(torch.cat(embeddings[1:]), dim=-1)  # positives first: row i is q_i's
        target = torch.arange(len(queries), device=queries.device)
        per_row = len(candidates) // len(queries)  # the positive and the k negatives
        rank, world = self._world()
        if world == 1:
            return F.cross_entropy(self.logits(queries, candidates, per_row, offset=0), target)
        from sentence_transformers.util.distributed import all_gather, all_gather_with_grad

        # Processes can hold different numbers of rows (the last step of an epoch, clpft.data.batching), so
        # each one's rows are counted, its candidates padded to the largest block for the gather and cut
        # back after it; process r's block starts after the blocks of processes 0..r-1. Gathered with
        # gradients: a candidate is scored by every process's queries, and its gradient sums all those
        # terms (the backward all-reduces them).
        rows = all_gather(torch.tensor([len(queries)], device=queries.device)).tolist()
        padded = F.pad(candidates, (0, 0, 0, per_row * (max(rows) - len(queries))))
        blocks = all_gather_with_grad(padded).split(per_row * max(rows))
        candidates = torch.cat([block[: per_row * n] for block, n in zip(blocks, rows)])
        target = target + per_row * sum(rows[:rank])
        scores = self.logits(queries, candidates, per_row, offset=per_row * sum(rows[:rank]))
        # The sum over this process's queries, scaled so that the mean over processes (what DDP's gradient
        # averaging takes) is the mean over the global batch's queries, whatever each process holds.
        return F.cross_entropy(scores, target, reduction="sum") * world / sum(rows)

    def logits(self, queries: Tensor, candidates: Tensor, per_row: int, offset: int) -> Tensor:
        """cos / τ of every query against every candidate, plus the hardness weighting of each query's own hard
        negatives. This process's B queries' candidates start at ``offset``, in ``per_row`` blocks of B: their
        positives, their first negatives, their second, ...; so query i's own negatives are at offset + j·B + i
        for j = 1 .. per_row - 1."""
        cosines = queries @ candidates.T
        scores = cosines / self.temperature
        if self.hardness_strength == 0:
            return scores
        rows = torch.arange(len(queries), device=scores.device)
        own_negatives = offset + torch.arange(1, per_row, device=scores.device)[None, :] * len(queries) + rows[:, None]
        own = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, own_negatives, True)
        return scores + self.hardness_strength * cosines.detach() * own

    def penalty(self, negatives: list[Tensor], own_query_embeddings: Tensor | None, labels: Tensor | None) -> Tensor:
        """1 - mean cosine between each negative and its own queries (averaged per negative first)."""
        reference = negatives[0] if negatives else own_query_embeddings
        zero = reference.sum() * 0.0  # keeps the graph (and device, dtype) without contributing
        if own_query_embeddings is None or labels is None or not negatives or not (labels >= 0).any():
            total_cos, count = zero, zero.detach()
        else:
            negs = F.normalize(torch.stack(negatives, dim=1), dim=-1)  # (B, k, d)
            own_queries = F.normalize(own_query_embeddings, dim=-1)  # (Q, d)
            valid = labels >= 0  # (B, k, M)
            gathered = own_queries[labels.clamp(min=0)]  # (B, k, M, d)
            cosines = (gathered * negs.unsqueeze(2)).sum(-1) * valid  # (B, k, M)
            known = valid.any(-1)  # (B, k)
            per_negative = cosines.sum(-1) / valid.sum(-1).clamp(min=1)
            total_cos, count = per_negative[known].sum(), known.sum().to(zero.dtype)
        _, world = self._world()
        if world == 1:
            return zero if count == 0 else 1.0 - total_cos / count
        # Under DDP: the mean over the global batch's known negatives, 1 - S / N (S the global sum of
        # cosines, N the global count). Its value is all-reduced, so every process returns the penalty
        # itself; its gradient is process r's share, -world * dS_r / N, which DDP's averaging over the
        # processes turns into -dS / N, the single-process gradient. Every process joins the all_reduce,
        # even one without a known negative, or the others would wait for it forever.
        global_sum_count = torch.stack([total_cos.detach(), count.detach()])
        torch.distributed.all_reduce(global_sum_count)
        global_sum, global_count = global_sum_count[0], global_sum_count[1]
        if global_count == 0:
            return zero
        local_share = world * (total_cos - total_cos.detach()) / global_count  # value 0, gradient world * dS_r / N
        return (1.0 - global_sum / global_count) - local_share

    def get_config_dict(self) -> dict[str, Any]:
        config = {"penalty_weight": self.penalty_weight, "temperature": self.temperature}
        return config | ({"hardness_strength": self.hardness_strength} if self.hardness_strength else {})

    @property
    def citation(self) -> str:
        return """
@misc{yu2024clp,
      title={Efficient fine-tuning methodology of text embedding models for information retrieval:
             contrastive learning penalty (clp)},
      author={Jeongsu Yu},
      year={2024},
      eprint={2412.17364},
      archivePrefix={arXiv},
      primaryClass={cs.IR},
      url={https://arxiv.org/abs/2412.17364},
}
"""


class InfoNCELoss(CLPLoss):
    """InfoNCE over (query, positive, negatives...) with in-batch negatives: CLPLoss with λ = 0.

    Same candidates and temperature as CLPLoss, so the two differ only by the penalty."""

    def __init__(self, model: SentenceTransformer, temperature: float = 0.02, hardness_strength: float = 0.0) -> None:
        super().__init__(model, penalty_weight=0.0, temperature=temperature, hardness_strength=hardness_strength)
