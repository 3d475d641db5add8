"""Hard-negatives-only contrastive losses (the Nemotron recipe's setting).

sentence-transformers 5.7's MultipleNegativesRankingLoss always scores a query against every document in
the batch (in-batch negatives); it has no switch to turn them off. These subclasses score each query
against its own positive and its own mined negatives only::

    loss_i = -log softmax(scale * [cos(q_i, p_i), cos(q_i, n_i1), ..., cos(q_i, n_ik)])[0]

so a batch is just a way to average independent per-query losses, and the batch sampler does not need
to avoid duplicates. Both work under MatryoshkaLoss (the plain one through the model-forward decorator,
the cached one through its ``calculate_loss`` decorator).

Example::

    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> pos, neg = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> round(float(own_candidates_loss(q, [pos, neg], scale=1.0)), 4)  # log(1 + e^-1)
    0.3133
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from torch import Tensor


def own_candidates_loss(queries: Tensor, docs: list[Tensor], scale: float) -> Tensor:
    """Mean cross-entropy of each query over [its positive, its negatives] (cosine x scale); column 0 wins."""
    if len(docs) < 2:
        raise ValueError("hard-negatives-only training needs at least one negative column besides the positive")
    q = F.normalize(queries, p=2, dim=-1)
    d = F.normalize(torch.stack(docs, dim=1), p=2, dim=-1)  # (batch, 1 + k, dim)
    scores = torch.einsum("bd,bkd->bk", q, d) * scale
    target = torch.zeros(q.size(0), dtype=torch.long, device=q.device)
    return F.cross_entropy(scores, target)


class HardNegativesOnlyLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss without in-batch negatives: each query sees its own candidates only."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        return own_candidates_loss(embeddings[0], embeddings[1:], self.scale)

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "in_batch_negatives": False}


class CachedHardNegativesOnlyLoss(CachedMultipleNegativesRankingLoss):
    """The GradCache form of :class:`HardNegativesOnlyLoss`, chunked over ``mini_batch_size`` queries."""

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        queries = torch.cat(reps[0])
        docs = [torch.cat(r) for r in reps[1:]]
        total = len(queries)
        losses = []
        for begin in range(0, total, self.mini_batch_size):
            end = min(begin + self.mini_batch_size, total)
            part = own_candidates_loss(queries[begin:end], [d[begin:end] for d in docs], self.scale)
            part = part * (end - begin) / total
            if with_backward:
                part.backward()
                part = part.detach()
            losses.append(part)
        return sum(losses)

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "in_batch_negatives": False}
