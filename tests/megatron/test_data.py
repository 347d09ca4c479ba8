"""`step_batches`: the steps' micro-batches in order, built in DataLoader workers with --dataloader_num_workers."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from swift.megatron.data import BatchPlan, global_batch_indices, step_batches


class _RecordingRows(list):
    """Rows that note which process read them (a file per process: workers are other processes)."""

    def __init__(self, rows: list[dict], folder: Path) -> None:
        super().__init__(rows)
        self.folder = folder

    def __getitem__(self, index):
        (self.folder / str(os.getpid())).touch()
        return super().__getitem__(index)


def _rows(n: int) -> list[dict]:
    return [{"input_ids": list(range(1, 3 + i % 5)), "labels": list(range(1, 3 + i % 5))} for i in range(n)]


def test_workers_build_the_same_batches_in_other_processes(tmp_path):
    plan = BatchPlan(global_batch_size=4, micro_batch_size=2, data_parallel_size=1, data_parallel_rank=0, seed=3)
    inline = list(step_batches(_rows(10), plan, 1, 6))
    rows = _RecordingRows(_rows(10), tmp_path)
    loaded = list(step_batches(rows, plan, 1, 6, num_workers=2))
    assert len(loaded) == len(inline) == 5
    for (micro_a, length_a), (micro_b, length_b) in zip(inline, loaded, strict=True):
        assert length_a == length_b
        for a, b in zip(micro_a, micro_b, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in ("tokens", "labels", "loss_mask", "position_ids"))
    readers = {int(p.name) for p in tmp_path.iterdir()}
    assert readers
    assert os.getpid() not in readers  # every row was read in a worker process


def test_group_by_length_puts_similar_rows_in_each_global_batch():
    from swift.megatron.data import step_microbatches

    rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in [int(2 + (i * 37) % 61) for i in range(400)]]
    lengths = [len(r["input_ids"]) for r in rows]
    plain = BatchPlan(global_batch_size=8, micro_batch_size=4, data_parallel_size=1, data_parallel_rank=0, seed=3)
    grouped = BatchPlan(**{**plain.__dict__, "lengths": lengths})
    steps = len(rows) // 8

    def padded_tokens(plan) -> int:
        return sum(step_microbatches(rows, s, plan)[1] * 8 for s in range(steps))

    # every row once per epoch, in a seeded order that differs between epochs
    epoch0 = [i for s in range(steps) for i in global_batch_indices(len(rows), s, grouped)]
    epoch1 = [i for s in range(steps, 2 * steps) for i in global_batch_indices(len(rows), s, grouped)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(len(rows)))
    assert epoch0 != epoch1
    assert epoch0 == [i for s in range(steps) for i in global_batch_indices(len(rows), s, grouped)]
    # each global batch holds neighbours in length: far less padding than the plain order
    assert padded_tokens(grouped) < 0.75 * padded_tokens(plain)
    assert sum(lengths) < padded_tokens(grouped)
