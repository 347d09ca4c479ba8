"""The rows, batches and losses of the encoder tasks (`--task_type seq_cls|embedding|reranker|generative_reranker`),
shared by `swift sft` (swift.train.tasks) and `megatron sft` (swift.megatron.tasks), so that both read the same rows
the same way and train the same objective:

    TaskEncoder(task, problem_type, num_labels)(template, row) -> {"input_ids", "sequences"?, "task_label"}
    task_batch(rows, task, problem_type)   -> TaskBatch: sequences flattened, labels, sizes of the rows' groups
    task_loss(task, loss_type, problem_type, outputs, labels, sizes) -> (loss, [rows, k] statistics)

ms-swift's row formats (docs/tasks.md):

    seq_cls              {"messages", "label"}: an int class, a float (regression) or a list of classes (multi-label)
    embedding            {"messages", "positive_messages": [[...]], "negative_messages": [[...], ...], "label"?}
    reranker, generative {"messages" (the query), "positive_messages", "negative_messages"} (documents)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swift.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Reranker rows: documents per query (one positive + up to this many negatives; ms-swift's MAX_NEGATIVE_SAMPLES
# environment variable sets it).
MAX_NEGATIVES = 7


def resolve_problem_type(problem_type: str | None, num_labels: int | None, rows: Any) -> str:
    """--problem_type, else as ms-swift: regression for one label, multi-label for list labels, regression for
    fractional labels, else single-label classification."""
    if problem_type:
        return problem_type
    if num_labels == 1:
        return "regression"
    label = next((row.get("label") for row in rows if row.get("label") is not None), None)
    if isinstance(label, list):
        return "multi_label_classification"
    if isinstance(label, float) and not label.is_integer():
        return "regression"
    return "single_label_classification"


def _conversations(value: Any, field: str) -> list[list[dict]]:
    """ms-swift's positive_messages / negative_messages: a list of conversations (one more [] than messages)."""
    if value is None:
        return []
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = [value]  # a single conversation given without the outer list
    if not isinstance(value, list) or not all(isinstance(c, list) and c for c in value):
        raise ConfigError(f"{field}: must be a list of conversations, each a list of {{role, content}} messages")
    return value


@dataclass(frozen=True)
class TaskEncoder:
    """Row -> ids of one task. Multi-sequence rows give `sequences` (anchor, positive, negatives... or one pair per
    document) and, as `input_ids`, their longest, so that the --max_length filter sees every row's longest one."""

    task_type: str
    problem_type: str | None = None
    num_labels: int | None = None

    def __call__(self, template: Any, row: dict) -> dict[str, Any]:
        from swift.core.model.tasks import pair_messages, task_messages

        system = template.default_system
        ids = lambda messages: template.encode({"messages": messages})["input_ids"]  # noqa: E731
        if self.task_type == "seq_cls":
            return {"input_ids": ids(task_messages(row["messages"], system)), "task_label": self.label(row)}
        positives = _conversations(row.get("positive_messages"), "positive_messages")
        negatives = _conversations(row.get("negative_messages"), "negative_messages")
        if not positives:
            raise ConfigError(f"--task_type {self.task_type}: a row has no positive_messages (rows: messages, "
                              "positive_messages [[...]], negative_messages [[...], ...]; docs/tasks.md)")
        if self.task_type == "embedding":
            texts = [row["messages"], positives[0], *negatives]
            sequences = [ids(task_messages(messages, system)) for messages in texts]
            label = row.get("label")
            return {"input_ids": max(sequences, key=len), "sequences": sequences,
                    "task_label": 1.0 if label is None else float(label)}
        from swift.core.model.task_losses import max_negatives

        documents = [positives[0], *negatives[:max_negatives(MAX_NEGATIVES)]]  # the positive first: labels implied
        sequences = [ids(pair_messages(self.task_type, row["messages"], doc, system)) for doc in documents]
        return {"input_ids": max(sequences, key=len), "sequences": sequences, "task_label": 1.0}

    def label(self, row: dict) -> Any:
        label = row.get("label")
        if label is None:
            raise ConfigError("--task_type seq_cls: a row has no label (rows: messages + label)")
        if self.problem_type == "multi_label_classification":
            classes = label if isinstance(label, list) else [label]
            hot = [0.0] * (self.num_labels or 0)
            for index in classes:
                if not 0 <= int(index) < len(hot):
                    raise ConfigError(f"label {label}: class {index} is outside --num_labels {self.num_labels}")
                hot[int(index)] = 1.0
            return hot
        if self.problem_type == "regression":
            return [float(v) for v in label] if isinstance(label, list) else [float(label)]
        if not 0 <= int(label) < (self.num_labels or 0):
            raise ConfigError(f"label {label}: outside --num_labels {self.num_labels} (classes 0..{self.num_labels - 1})")
        return [float(int(label))]


@dataclass
class TaskBatch:
    """Encoded task rows as one batch: every sequence of every row (a seq_cls row has one), the rows' labels and
    how many consecutive sequences belong to each row."""

    sequences: list[list[int]]
    labels: torch.Tensor
    group_sizes: list[int]


def task_batch(rows: list[dict], task_type: str, problem_type: str | None) -> TaskBatch:
    import torch

    if task_type == "seq_cls":
        labels = torch.tensor([row["task_label"] for row in rows], dtype=torch.float32)
        if problem_type == "single_label_classification":
            labels = labels[:, 0].long()
        elif problem_type == "regression" and labels.shape[1] == 1:
            labels = labels[:, 0]
        return TaskBatch([list(row["input_ids"]) for row in rows], labels, [1] * len(rows))
    return TaskBatch([list(seq) for row in rows for seq in row["sequences"]],
                     torch.tensor([float(row["task_label"]) for row in rows]),
                     [len(row["sequences"]) for row in rows])


def gather_rows(outputs: torch.Tensor, labels: torch.Tensor, group_sizes: list[int],
                group: Any = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every data-parallel rank's embeddings, labels and row groups (rank order), for InfoNCE's in-batch negatives
    over the whole batch as ms-swift computes them. Gradients are exact: every rank computes the same loss on the
    gathered rows, and the backward sums their gradients (so that DDP's average over ranks is the gradient of
    that loss, as if one process had held the whole batch)."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size(group)
    counts = [None] * world
    dist.all_gather_object(counts, (outputs.shape[0], list(group_sizes), labels.tolist()), group=group)
    longest = max(c[0] for c in counts)
    padded = torch.cat([outputs, outputs.new_zeros(longest - outputs.shape[0], *outputs.shape[1:])])
    gathered = _all_gather_class().apply(padded, group)  # [world, longest, H]
    pieces = [gathered[r, :counts[r][0]] for r in range(world)]
    sizes = [n for c in counts for n in c[1]]
    all_labels = torch.tensor([v for c in counts for v in c[2]], dtype=labels.dtype, device=labels.device)
    return torch.cat(pieces), all_labels, sizes


@functools.cache
def _all_gather_class() -> type:
    import torch
    import torch.distributed as dist

    class AllGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor, group):
            ctx.group, ctx.rank = group, dist.get_rank(group)
            out = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
            dist.all_gather(out, tensor.contiguous(), group=group)
            return torch.stack(out)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous()
            dist.all_reduce(grad, group=ctx.group)  # every rank's loss depends on this rank's rows
            return grad[ctx.rank], None

    return AllGather


def _data_parallel_world(group: Any) -> int:
    import torch.distributed as dist

    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def task_loss(task_type: str, loss_type: str | None, problem_type: str | None, outputs: torch.Tensor,
              labels: torch.Tensor, group_sizes: list[int], *, group: Any = None,
              gather: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over the rows, [rows, k] statistics for the metrics) from one forward's pooled `outputs`:
    seq_cls / reranker [N, num_labels] logits, embedding [N, H] unit vectors, generative_reranker [N, 1].
    `gather`: InfoNCE with in-batch negatives (INFONCE_USE_BATCH, the default) scores every rank of the
    data-parallel `group` (default: the world), as ms-swift does; the loss and the statistics are then the whole
    batch's, the same on every rank."""
    import torch

    from swift.core.model import task_losses as losses

    sizes = list(group_sizes)
    if task_type == "seq_cls":
        return losses.seq_cls_loss(outputs, labels, problem_type), outputs.detach()
    if task_type == "embedding":
        loss_type = loss_type or "infonce"
        options = losses.InfoNCEOptions.from_env() if loss_type == "infonce" else None
        if options is not None and options.use_batch and gather and _data_parallel_world(group) > 1:
            outputs, labels, sizes = gather_rows(outputs, labels, sizes, group)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        anchors, positives = outputs[starts], outputs[[s + 1 for s in starts]]
        per_row = [outputs[s + 2:s + n] for s, n in zip(starts, sizes, strict=True)]
        negatives = torch.cat(per_row)
        if options is not None:
            loss = losses.infonce_groups(anchors, positives, per_row, options)
        else:
            loss = getattr(losses, f"{loss_type}_loss")(anchors, positives, labels)
        documents = torch.cat([positives, negatives]).detach()
        sims = anchors.detach() @ documents.T  # [B, B + N]: the positive of row i is column i
        stats = [losses.ranking_stats(sims[i, i], torch.cat([sims[i, :i], sims[i, i + 1:]]))
                 for i in range(len(sizes))]
        return loss, torch.tensor(stats)
    scores = outputs.squeeze(-1)  # [N]: one per (query, document)
    pair_labels = torch.cat([torch.tensor([1.0] + [0.0] * (n - 1)) for n in sizes]).to(scores.device)
    if (loss_type or "pointwise_reranker") == "listwise_reranker":
        options = losses.ListwiseOptions.from_env()
        loss = losses.listwise_reranker_loss(scores, sizes, options.temperature, options.min_group_size)
    else:
        loss = losses.pointwise_reranker_loss(scores, pair_labels)
    groups = torch.split(scores.detach(), sizes)
    return loss, torch.tensor([losses.ranking_stats(g[0], g[1:]) for g in groups])


def task_metrics(task_type: str, problem_type: str | None, predictions: Any, labels: Any) -> dict[str, float]:
    """Validation metrics from the statistics `task_loss` returns (stacked over the validation rows): seq_cls
    accuracy (mse for regression); embedding / reranker: the positive's mean score, the best negative's, their
    margin and the mean reciprocal rank of the positive."""
    import numpy as np

    preds, labels = np.asarray(predictions), np.asarray(labels)
    if task_type == "seq_cls":
        if problem_type == "regression":
            return {"mse": float(np.mean((preds.reshape(labels.shape) - labels) ** 2))}
        if problem_type == "multi_label_classification":
            return {"accuracy": float(np.mean(np.all((preds > 0) == (labels > 0.5), axis=-1)))}
        return {"accuracy": float(np.mean(preds.argmax(-1) == labels))}
    positive, best_other, rr = preds[:, 0], preds[:, 1], preds[:, 2]
    return {"mean_pos": float(np.mean(positive)), "mean_neg": float(np.nanmean(best_other)),
            "margin": float(np.nanmean(positive - best_other)), "mrr": float(np.mean(rr))}
