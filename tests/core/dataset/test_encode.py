"""Encoding with a length filter (up front and lazily), and packing into max_length bins with sequence boundaries."""

from __future__ import annotations

import logging
import random

import pytest

from swift.core.dataset import LazyEncodedDataset, encode_dataset, pack_dataset, pack_rows, plan_bins


def fake_encode(row: dict) -> dict:
    """One token per character of every message; loss on the assistant's characters only."""
    input_ids, labels = [], []
    for message in row["messages"]:
        ids = [ord(c) % 1000 for c in message["content"]]
        input_ids += ids
        labels += ids if message["role"] == "assistant" else [-100] * len(ids)
    return {"input_ids": input_ids, "labels": labels}


@pytest.fixture(scope="module")
def chats():
    from datasets import Dataset

    rng = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": "q" * rng.randint(1, 20)},
                          {"role": "assistant", "content": "a" * rng.randint(1, 40)}], "id": i} for i in range(200)]
    return Dataset.from_list(rows)


def test_encode_drops_long_rows_and_reports_how_many(chats, caplog):
    lengths = [len(fake_encode(r)["input_ids"]) for r in chats]
    want = sum(n <= 30 for n in lengths)
    with caplog.at_level(logging.WARNING, logger="swift.core.dataset"):
        encoded = encode_dataset(chats, fake_encode, max_length=30)
    assert len(encoded) == want
    assert max(encoded["length"]) <= 30
    assert set(encoded.column_names) == {"input_ids", "labels", "length"}
    assert f"dropped {200 - want} of 200 rows longer than max_length=30" in caplog.text
    assert len(encode_dataset(chats, fake_encode, num_proc=2)) == 200


def test_lazy_encoding_skips_long_rows_when_read(chats):
    lazy = encode_dataset(chats, fake_encode, max_length=30, lazy=True)
    assert isinstance(lazy, LazyEncodedDataset)
    assert len(lazy) == 200
    rows = [lazy[i] for i in range(len(lazy))]
    assert all(r["length"] <= 30 for r in rows)
    assert lazy.dropped == {i for i, r in enumerate(chats) if len(fake_encode(r)["input_ids"]) > 30}


def test_pack_rows_restarts_positions_and_masks_each_boundary():
    packed = pack_rows([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}])
    assert packed["input_ids"] == [1, 2, 3, 4, 5]
    assert packed["position_ids"] == [0, 1, 2, 0, 1]
    assert packed["labels"] == [-100, 2, 3, -100, 5]  # 4 is not learned from the first sequence's last token
    assert packed["seq_lengths"] == [3, 2]
    assert packed["length"] == 5


@pytest.mark.parametrize("seed", range(3))
def test_plan_bins_uses_every_row_once_and_fills_bins(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 512) for _ in range(2000)]
    bins = plan_bins(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(2000))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    lower_bound = -(-sum(lengths) // 512)
    assert len(bins) <= 1.05 * lower_bound + 1  # best-fit decreasing is within a few percent of optimal here


def test_plan_bins_refuses_rows_longer_than_a_bin():
    with pytest.raises(ValueError, match="more than max_length=4"):
        plan_bins([3, 5], 4)


def test_pack_dataset_keeps_every_sequence_whole(chats):
    encoded = encode_dataset(chats, fake_encode, max_length=64)
    packed = pack_dataset(encoded, 64)
    assert len(packed) < len(encoded) / 2
    assert sum(len(r["seq_lengths"]) for r in packed) == len(encoded)
    originals = sorted(tuple(ids) for ids in encoded["input_ids"])
    pieces = []
    for row in packed:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == row["length"] <= 64
        start = 0
        for n in row["seq_lengths"]:
            assert row["position_ids"][start:start + n] == list(range(n))
            assert row["labels"][start] == -100
            pieces.append(tuple(row["input_ids"][start:start + n]))
            start += n
    assert sorted(pieces) == originals


def test_streamed_rows_are_encoded_and_filtered_as_read(chats, caplog):
    stream = chats.to_iterable_dataset()
    with caplog.at_level(logging.WARNING, logger="swift.core.dataset"):
        rows = list(encode_dataset(stream, fake_encode, max_length=30))
    assert all(set(r) == {"input_ids", "labels", "length"} for r in rows)
    assert len(rows) == sum(len(fake_encode(r)["input_ids"]) <= 30 for r in chats)
    assert f"dropped {200 - len(rows)} of 200 streamed rows" in caplog.text
