"""Losses and evaluation statistics of the encoder tasks (`--task_type seq_cls|embedding|reranker|
generative_reranker`): plain functions, tensors in, a scalar out, so each can be checked against a reference.

The constants are ms-swift's defaults (its INFONCE_TEMPERATURE, the 0.5 margin of its contrastive losses,
LISTWISE_RERANKER_TEMPERATURE / _MIN_GROUP_SIZE). The functions take them as arguments; `InfoNCEOptions.from_env`
and `ListwiseOptions.from_env` read the environment variables ms-swift's scripts set (docs/tasks.md) where the loss
is computed (`swift.core.model.task_rows.task_loss`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from swift.core.errors import ConfigError

INFONCE_TEMPERATURE = 0.1
CONTRASTIVE_MARGIN = 0.5
LISTWISE_TEMPERATURE = 1.0


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {name}={value!r}: use true or false")


def _env_number(name: str, default, kind=float):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: not a{'n integer' if kind is int else ' number'}") \
            from None


@dataclass(frozen=True)
class InfoNCEOptions:
    """ms-swift's INFONCE_* knobs. use_batch: score each query against every document of the batch (else only its
    own positive and negatives); hard_negatives: each row's negatives cut to, or resampled up to, this many;
    mask_fake_negative: documents (and queries) scoring above the positive + fake_negative_margin count as -inf;
    include_qq / include_dd: the other queries, and the positive's similarity to the other documents, join the
    denominator (Qwen3-Embedding's)."""

    temperature: float = INFONCE_TEMPERATURE
    use_batch: bool = True
    hard_negatives: int | None = None
    mask_fake_negative: bool = False
    fake_negative_margin: float = 0.1
    include_qq: bool = False
    include_dd: bool = False

    @classmethod
    def from_env(cls) -> InfoNCEOptions:
        options = cls(temperature=_env_number("INFONCE_TEMPERATURE", INFONCE_TEMPERATURE),
                      use_batch=_env_bool("INFONCE_USE_BATCH", True),
                      hard_negatives=_env_number("INFONCE_HARD_NEGATIVES", None, int),
                      mask_fake_negative=_env_bool("INFONCE_MASK_FAKE_NEGATIVE", False),
                      fake_negative_margin=_env_number("INFONCE_FAKE_NEG_MARGIN", 0.1),
                      include_qq=_env_bool("INFONCE_INCLUDE_QQ", False),
                      include_dd=_env_bool("INFONCE_INCLUDE_DD", False))
        if options.temperature <= 0:
            raise ConfigError(f"INFONCE_TEMPERATURE={options.temperature}: must be above 0")
        if options.hard_negatives is not None and options.hard_negatives < 1:
            raise ConfigError(f"INFONCE_HARD_NEGATIVES={options.hard_negatives}: must be at least 1")
        return options


@dataclass(frozen=True)
class ListwiseOptions:
    """ms-swift's LISTWISE_RERANKER_TEMPERATURE / LISTWISE_RERANKER_MIN_GROUP_SIZE."""

    temperature: float = LISTWISE_TEMPERATURE
    min_group_size: int = 2

    @classmethod
    def from_env(cls) -> ListwiseOptions:
        options = cls(_env_number("LISTWISE_RERANKER_TEMPERATURE", LISTWISE_TEMPERATURE),
                      _env_number("LISTWISE_RERANKER_MIN_GROUP_SIZE", 2, int))
        if options.temperature <= 0:
            raise ConfigError(f"LISTWISE_RERANKER_TEMPERATURE={options.temperature}: must be above 0")
        return options


def max_negatives(default: int) -> int:
    """ms-swift's MAX_NEGATIVE_SAMPLES: documents per reranker row beyond the positive."""
    value = _env_number("MAX_NEGATIVE_SAMPLES", default, int)
    if value < 0:
        raise ConfigError(f"MAX_NEGATIVE_SAMPLES={value}: must be at least 0")
    return value


def seq_cls_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """logits [B, L]; labels [B] class ids (single-label), [B] or [B, L] values (regression), [B, L] 0/1
    (multi-label)."""
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1) if labels.dim() == 1 else logits, labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.long())


def infonce_groups(anchors: torch.Tensor, positives: torch.Tensor, negatives: Sequence[torch.Tensor],
                   options: InfoNCEOptions = InfoNCEOptions()) -> torch.Tensor:
    """InfoNCE with ms-swift's options: anchors, positives [B, H] unit vectors, negatives[i] [n_i, H] row i's hard
    negatives. Mean over the rows of the cross-entropy picking each row's own positive."""
    negatives = [_fixed_count(n, options.hard_negatives) for n in negatives]
    losses = []
    if not options.use_batch:
        for i in range(len(anchors)):
            logits = anchors[i] @ torch.cat([positives[i:i + 1], negatives[i]]).T / options.temperature
            losses.append(F.cross_entropy(logits.unsqueeze(0), logits.new_zeros(1, dtype=torch.long)))
        return torch.stack(losses).mean()
    groups = [torch.cat([positives[i:i + 1], negatives[i]]) for i in range(len(anchors))]
    documents = torch.cat(groups)  # row i's positive at column `starts[i]`
    starts = [sum(len(g) for g in groups[:i]) for i in range(len(groups))]
    for i, start in enumerate(starts):
        qd = anchors[i] @ documents.T
        parts = [qd]
        threshold = qd[start].detach() + options.fake_negative_margin
        if options.mask_fake_negative:
            parts[0] = qd.masked_fill(qd > threshold, float("-inf"))
        if options.include_qq:
            qq = (anchors[i] @ anchors.T).clone()
            qq[i] = float("-inf")
            if options.mask_fake_negative:
                qq = qq.masked_fill(qq > threshold, float("-inf"))
            parts.append(qq)
        if options.include_dd:
            dd = (positives[i] @ documents.T).clone()
            dd[start] = float("-inf")
            parts.append(dd)
        logits = torch.cat(parts) / options.temperature
        losses.append(F.cross_entropy(logits.unsqueeze(0), torch.tensor([start], device=logits.device)))
    return torch.stack(losses).mean()


def _fixed_count(negatives: torch.Tensor, count: int | None) -> torch.Tensor:
    """A row's negatives cut to `count`, or padded to it by drawing its own negatives again (ms-swift's
    INFONCE_HARD_NEGATIVES); as they are without a count."""
    if count is None or len(negatives) == count:
        return negatives
    if len(negatives) == 0:
        raise ConfigError("INFONCE_HARD_NEGATIVES: a row has no negative_messages to draw from")
    if len(negatives) > count:
        return negatives[:count]
    extra = torch.randint(len(negatives), (count - len(negatives),), device=negatives.device)
    return torch.cat([negatives, negatives[extra]])


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
