"""Losses and evaluation statistics of the encoder tasks (`--task_type seq_cls|embedding|reranker|
generative_reranker`): plain functions, tensors in, a scalar out, so each can be checked against a reference.

The constants are ms-swift's defaults (its INFONCE_TEMPERATURE, the 0.5 margin of its contrastive losses,
LISTWISE_RERANKER_TEMPERATURE / _MIN_GROUP_SIZE); here they are arguments, not environment variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

INFONCE_TEMPERATURE = 0.1
CONTRASTIVE_MARGIN = 0.5
LISTWISE_TEMPERATURE = 1.0


def seq_cls_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """logits [B, L]; labels [B] class ids (single-label), [B] or [B, L] values (regression), [B, L] 0/1
    (multi-label)."""
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1) if labels.dim() == 1 else logits, labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.long())


def infonce_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                 temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """anchors, positives [B, H] unit vectors, negatives [N, H] (every row's hard negatives). Each anchor is scored
    against every positive and negative of the batch (in-batch negatives); its own positive is the target."""
    documents = positives if negatives is None or len(negatives) == 0 else torch.cat([positives, negatives])
    logits = anchors @ documents.T / temperature  # [B, B + N]
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def cosine_similarity_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the pairs' cosine similarity and their label (a similarity score)."""
    return F.mse_loss(F.cosine_similarity(first, second), labels.float())


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor,
                     margin: float = CONTRASTIVE_MARGIN) -> torch.Tensor:
    """Pairs labelled 1 pulled to cosine distance 0, pairs labelled 0 pushed beyond `margin`."""
    distance = 1 - F.cosine_similarity(first, second)
    labels = labels.float()
    return (0.5 * (labels * distance.pow(2) + (1 - labels) * F.relu(margin - distance).pow(2))).mean()


def online_contrastive_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor,
                            margin: float = CONTRASTIVE_MARGIN) -> torch.Tensor:
    """The contrastive loss on the hard pairs only: negatives closer than the farthest positive, positives farther
    than the closest negative (sentence-transformers' OnlineContrastiveLoss, summed as ms-swift does)."""
    distance = 1 - F.cosine_similarity(first, second)
    negatives, positives = distance[labels == 0], distance[labels == 1]
    hard_negatives = negatives[negatives < (positives.max() if len(positives) > 1 else negatives.mean())]
    hard_positives = positives[positives > (negatives.min() if len(negatives) > 1 else positives.mean())]
    return hard_positives.pow(2).sum() + F.relu(margin - hard_negatives).pow(2).sum()


def pointwise_reranker_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """scores [N] logits of (query, document) pairs, labels [N] 1 relevant / 0 not: binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(scores, labels.float())


def listwise_reranker_loss(scores: torch.Tensor, group_sizes: Sequence[int],
                           temperature: float = LISTWISE_TEMPERATURE, min_group_size: int = 2) -> torch.Tensor:
    """scores [N] in groups (a query's positive first, then its negatives): softmax cross-entropy picking the
    positive in each group, averaged over the groups of at least `min_group_size` documents."""
    losses = []
    for group in torch.split(scores, list(group_sizes)):
        if len(group) >= min_group_size:
            target = torch.zeros(1, dtype=torch.long, device=scores.device)
            losses.append(F.cross_entropy((group / temperature).unsqueeze(0), target))
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0


def reciprocal_rank(positive: torch.Tensor, others: torch.Tensor) -> float:
    """1 / rank of `positive` among `positive` and `others` (ties count against it)."""
    return 1.0 / (1 + int((others >= positive).sum()))


def ranking_stats(positive: torch.Tensor, others: torch.Tensor) -> list[float]:
    """[positive score, best other score, reciprocal rank] of one query (nan where it has no others)."""
    if len(others) == 0:
        return [float(positive), float("nan"), 1.0]
    return [float(positive), float(others.max()), reciprocal_rank(positive, others)]
