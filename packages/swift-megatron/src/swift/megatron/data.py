"""Rows -> global batches -> this data-parallel rank's micro-batches, as mcore's schedules consume them.

The rows are `swift sft`'s: same datasets, template, loss masks, truncation and packing (swift.core). Every rank
computes the same order (seeded), takes its slice of each global batch and pads all micro-batches of a step to the
step's longest row, so pipeline stages agree on the activation shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

IGNORE = -100


@dataclass
class BatchPlan:
    global_batch_size: int
    micro_batch_size: int
    data_parallel_size: int
    data_parallel_rank: int
    seed: int
    pad_multiple: int = 1
    lengths: Sequence[int] | None = None  # --group_by_length: each row's tokens
    task: Any = None  # --task_type embedding / generative_reranker (swift.megatron.tasks.MegatronTask)
    pairs: bool = False  # megatron rlhf: preference rows (swift.megatron.dpo), two sequences each


    @property
    def num_microbatches(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.data_parallel_size)


def epoch_order(num_rows: int, epoch: int, seed: int, lengths: Sequence[int] | None = None,
                group: int = 1) -> list[int]:
    """Epoch 0 keeps the (already shuffled) dataset order; later epochs reshuffle with seed + epoch.

    With `lengths` (--group_by_length), as transformers' LengthGroupedSampler: a seeded permutation (every epoch)
    cut into mega-batches of 50 global batches (`group` rows each), each sorted longest first, so that the rows of
    one global batch have similar lengths while the order of the mega-batches stays random."""
    import numpy as np

    if lengths is None:
        return list(range(num_rows)) if epoch == 0 else np.random.RandomState(seed + epoch).permutation(
            num_rows).tolist()
    order = np.random.RandomState(seed + epoch).permutation(num_rows).tolist()
    size = 50 * group
    return [i for start in range(0, num_rows, size)
            for i in sorted(order[start:start + size], key=lambda i: -lengths[i])]


def global_batch_indices(num_rows: int, step: int, plan: BatchPlan) -> list[int]:
    """Row indices of global batch `step` (0-based), cycling epochs as needed."""
    start = step * plan.global_batch_size
    out, cache = [], {}
    for position in range(start, start + plan.global_batch_size):
        epoch, offset = divmod(position, num_rows)
        if epoch not in cache:
            cache[epoch] = epoch_order(num_rows, epoch, plan.seed, plan.lengths, plan.global_batch_size)
        out.append(cache[epoch][offset])
    return out


def step_microbatches(rows: Sequence[dict], step: int, plan: BatchPlan) -> tuple[list[dict], int]:
    """This rank's micro-batches of `step` and their common sequence length (a task's micro-batches also share
    their number of sequences: `tokens` is [sequences, length])."""
    indices = global_batch_indices(len(rows), step, plan)
    length = max(row_length(rows[i]) for i in indices)
    length = -(-length // plan.pad_multiple) * plan.pad_multiple
    per_rank = plan.global_batch_size // plan.data_parallel_size
    mine = indices[plan.data_parallel_rank * per_rank:(plan.data_parallel_rank + 1) * per_rank]
    groups = [[rows[i] for i in mine[j:j + plan.micro_batch_size]] for j in range(0, per_rank, plan.micro_batch_size)]
    if plan.pairs:
        from swift.megatron.dpo import collate_pairs

        return [collate_pairs(group, length) for group in groups], length
    if plan.task is not None:
        from swift.megatron.tasks import collate_task, sequence_count

        count = max(sequence_count(group) for group in groups)  # one activation shape for the whole step
        return [collate_task(group, length, count, plan.task) for group in groups], length
    return [collate(group, length) for group in groups], length


def row_length(row: dict) -> int:
    """The tokens a row's longest sequence spans (what the step pads to)."""
    if "input_ids" in row:
        return len(row["input_ids"])
    from swift.megatron.dpo import pair_length

    return pair_length(row)


def collate(batch: Sequence[dict], length: int) -> dict[str, Any]:
    """Right-padded tokens, labels shifted for mcore (label[t] is the token after t), the loss mask, and for packed
    rows a block-diagonal causal mask (True = masked) so each packed sequence attends to itself only."""
    import torch

    tokens = torch.zeros(len(batch), length, dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE, dtype=torch.long)
    packed = any("position_ids" in row for row in batch)
    mask = torch.ones(len(batch), 1, length, length, dtype=torch.bool) if packed else None
    for b, row in enumerate(batch):
        n = len(row["input_ids"])
        tokens[b, :n] = torch.tensor(row["input_ids"])
        row_labels = torch.tensor(row["labels"])
        labels[b, : n - 1] = row_labels[1:]  # HF models shift internally; mcore takes shifted labels
        if packed:
            positions = row.get("position_ids") or list(range(n))
            start = 0
            for t in range(1, n + 1):
                if t == n or positions[t] == 0:
                    mask[b, 0, start:t, start:t] = ~torch.ones(t - start, t - start, dtype=torch.bool).tril()
                    if t < n:
                        labels[b, t - 1] = IGNORE  # the last token of one sequence does not predict the next one
                    start = t
    loss_mask = (labels != IGNORE).float()
    return {"tokens": tokens, "labels": labels.clamp(min=0), "loss_mask": loss_mask,
            "position_ids": torch.arange(length).unsqueeze(0).expand(len(batch), -1).contiguous(),
            "attention_mask": mask}


class _Steps:
    """Steps [start, stop) as a map-style dataset: item i is step start + i's (micro-batches, sequence length)."""

    def __init__(self, rows: Sequence[dict], plan: BatchPlan, start: int, stop: int) -> None:
        self.rows, self.plan, self.start, self.stop = rows, plan, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> tuple[list[dict], int]:
        return step_microbatches(self.rows, self.start + index, self.plan)


def step_batches(rows: Sequence[dict], plan: BatchPlan, start: int, stop: int, *,
                 num_workers: int = 0) -> Iterator[tuple[list[dict], int]]:
    """This rank's (micro-batches, sequence length) of steps start..stop-1 in order; with `num_workers` a torch
    DataLoader's worker processes collate them ahead of the step that consumes them (--dataloader_num_workers)."""
    steps = _Steps(rows, plan, start, stop)
    if num_workers == 0:
        return (steps[i] for i in range(len(steps)))
    from torch.utils.data import DataLoader

    # batch_size=None: each item already is a whole step; the order is the steps' order
    return iter(DataLoader(steps, batch_size=None, shuffle=False, num_workers=num_workers, prefetch_factor=2))
