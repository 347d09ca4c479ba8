"""Encoding at scale: rows -> token ids with a length filter (up front or lazily), and packing into max_length bins.

`encode_fn` is any callable row -> {"input_ids", "labels", ...} (a template's `encode`). Packing concatenates
encoded rows into one padding-free row per bin; `position_ids` restart at 0 at every sequence start, which is how
transformers' attention (flash-attention varlen, and the sdpa / eager masks built from packed position_ids) keeps
each sequence attending to itself only.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset, IterableDataset

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
IGNORE_INDEX = -100


def encoded_length(encoded: Mapping[str, Any]) -> int:
    """Tokens in an encoded row: len(input_ids), or the longest `*input_ids` (chosen/rejected pairs), or the prompt
    plus the longest answer (`prompt_ids` + `chosen_ids`/`rejected_ids`/`completion_ids`: trl's layouts)."""
    if "input_ids" in encoded:
        return len(encoded["input_ids"])
    lengths = [len(v) for k, v in encoded.items() if k.endswith("input_ids")]
    if not lengths and "prompt_ids" in encoded:
        answers = [len(v) for k, v in encoded.items() if k.endswith("_ids") and k != "prompt_ids"]
        return len(encoded["prompt_ids"]) + max(answers, default=0)
    lengths = lengths or [len(v) for k, v in encoded.items() if k.endswith("_ids")]
    if not lengths:
        raise ValueError(f"encode_fn returned no input_ids (keys: {sorted(encoded)})")
    return max(lengths)


class _Encoder:
    """encode_fn plus a `length` column (a class, not a closure, so that it pickles to map workers)."""

    def __init__(self, encode_fn: EncodeFn) -> None:
        self.encode_fn = encode_fn

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        encoded = dict(self.encode_fn(row))
        encoded["length"] = encoded_length(encoded)
        return encoded


def encode_dataset(
    dataset: Dataset | IterableDataset,
    encode_fn: EncodeFn,
    *,
    num_proc: int = 1,
    max_length: int | None = None,
    lazy: bool = False,
    fingerprint: str | None = None,
) -> Dataset | IterableDataset | LazyEncodedDataset:
    """Encode every row (keeping only what encode_fn returns, plus `length`) and drop rows over `max_length` tokens.

    The number of dropped rows is logged as one warning. `lazy=True` encodes rows when they are read instead
    (`LazyEncodedDataset`); a streamed `IterableDataset` is encoded and filtered as it is read. `fingerprint`:
    the encoded dataset's datasets fingerprint, instead of hashing `encode_fn` (which pickles a processor: seconds).
    """
    if lazy:
        return LazyEncodedDataset(dataset, encode_fn, max_length=max_length)
    from datasets import IterableDataset

    encoder = _Encoder(encode_fn)
    if isinstance(dataset, IterableDataset):
        return IterableDataset.from_generator(_encode_stream, gen_kwargs={
            "dataset": dataset, "encoder": encoder, "max_length": max_length})
    encoded = dataset.map(encoder, remove_columns=dataset.column_names, num_proc=num_proc if num_proc > 1 else None,
                          desc="Encoding", new_fingerprint=fingerprint)
    if max_length is None or len(encoded) == 0:
        return encoded
    import numpy as np

    lengths = _column_array(encoded, "length")
    keep = np.flatnonzero(lengths <= max_length)
    dropped = len(lengths) - len(keep)
    if dropped:
        logger.warning("dropped %d of %d rows longer than max_length=%d tokens (the longest has %d); raise "
                       "--max_length, or use --truncation_strategy left/right to keep them truncated",
                       dropped, len(lengths), max_length, int(lengths.max()))
        encoded = encoded.select(keep)
    return encoded


def _encode_stream(dataset: IterableDataset, encoder: _Encoder, max_length: int | None) -> Iterator[dict[str, Any]]:
    """Encoded rows of a streamed dataset; the rows over max_length are counted and logged after each pass."""
    dropped = seen = 0
    for row in dataset:
        seen += 1
        encoded = encoder(row)
        if max_length is not None and encoded["length"] > max_length:
            dropped += 1
            continue
        yield encoded
    if dropped:
        logger.warning("dropped %d of %d streamed rows longer than max_length=%d tokens", dropped, seen, max_length)


class LazyEncodedDataset:
    """A map-style dataset that encodes row i when it is read, for data too large to encode up front.

    A row longer than `max_length` is replaced by the next row that fits (so an epoch sees some rows twice);
    `dropped` holds the indices found too long so far, and the first one is logged.
    """

    def __init__(self, dataset: Dataset, encode_fn: EncodeFn, *, max_length: int | None = None) -> None:
        self.dataset, self.encode_fn, self.max_length = dataset, encode_fn, max_length
        self.dropped: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        total = len(self.dataset)
        for step in range(total):
            i = (index + step) % total
            if i in self.dropped:
                continue
            encoded = dict(self.encode_fn(self.dataset[i]))
            encoded["length"] = encoded_length(encoded)
            if self.max_length is None or encoded["length"] <= self.max_length:
                return encoded
            if not self.dropped:
                logger.warning("row %d has %d tokens, over max_length=%d: it and later such rows are skipped",
                               i, encoded["length"], self.max_length)
            self.dropped.add(i)
        raise ValueError(f"no row of the dataset fits in max_length={self.max_length} tokens")


def pack_rows(rows: Sequence[Mapping[str, Any]], *, row_batched: Sequence[str] = ()) -> dict[str, Any]:
    """Encoded rows as ONE padding-free row: ids and labels concatenated, position_ids restarting at 0 per row.

    The first label of every sequence is set to -100: models shift labels, so that label would otherwise train the
    previous sequence's last token to predict across the boundary (unpacked, it is never used either).
    Multimodal rows keep their processor outputs: per-token keys (`*token_type_ids`) concatenated like the ids,
    media (`pixel_values`, `image_grid_thw`...) concatenated in row order (along the second axis for `row_batched`
    keys, Idefics-style `[1, images, ...]`), and `<key>_counts` saying how many entries of each `*_grid_thw` each
    sequence has (the collator splits them per sequence for Qwen-VL's 3-D positions).
    """
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    seq_lengths: list[int] = []
    for row in rows:
        ids = [int(t) for t in row["input_ids"]]
        row_labels = [int(t) for t in row["labels"]] if row.get("labels") is not None else list(ids)
        if len(row_labels) != len(ids):
            raise ValueError(f"labels ({len(row_labels)}) and input_ids ({len(ids)}) differ in length")
        if ids:
            row_labels[0] = IGNORE_INDEX
        input_ids += ids
        labels += row_labels
        position_ids += range(len(ids))
        seq_lengths.append(len(ids))
    packed: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
                              "seq_lengths": seq_lengths, "length": len(input_ids)}
    media_keys = sorted({k for row in rows for k in row if k not in _PACK_BOOKKEEPING and row[k] is not None})
    for key in media_keys:
        values = [_as_list(row.get(key)) for row in rows]
        if key.endswith("token_type_ids"):
            packed[key] = [v for value, row in zip(values, rows, strict=True)
                           for v in (value or [0] * len(row["input_ids"]))]
        elif key in row_batched:
            packed[key] = [[item for value in values if value for item in value[0]]]
        else:
            packed[key] = [item for value in values if value for item in value]
        if key.endswith("_grid_thw"):
            packed[key + "_counts"] = [len(value or ()) for value in values]
    return packed


_PACK_BOOKKEEPING = ("input_ids", "labels", "length", "position_ids", "seq_lengths", "label")


def _as_list(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def plan_bins(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Row indices grouped into bins of at most `max_length` tokens, best-fit decreasing.

    Each row, longest first, goes into the open bin with the least room that still holds it. Open bins are kept by
    remaining room (at most max_length distinct values), so this takes O(n log max_length), not O(n * bins).
    """
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and int(lengths.max()) > max_length:
        raise ValueError(f"a row has {int(lengths.max())} tokens, more than max_length={max_length}; "
                         "filter with encode_dataset(..., max_length=...) first")
    bins: list[list[int]] = []
    rooms: list[int] = []  # sorted distinct remaining rooms that some open bin has
    by_room: dict[int, list[int]] = defaultdict(list)  # room -> open bins with exactly that room
    for index in np.argsort(-lengths, kind="stable"):
        length = int(lengths[index])
        k = bisect.bisect_left(rooms, length)
        if k == len(rooms):
            bins.append([])
            target, room = len(bins) - 1, max_length - length
        else:
            room_before = rooms[k]
            target = by_room[room_before].pop()
            if not by_room[room_before]:
                del rooms[k]
            room = room_before - length
        bins[target].append(int(index))
        if room > 0:
            if not by_room[room]:
                bisect.insort(rooms, room)
            by_room[room].append(target)
    return bins


# A stream is packed in windows of this many rows: bins are planned within a window, so memory stays bounded and
# the fill is close to packing the whole set (best-fit over 1,000 rows leaves little room in its bins).
STREAM_PACK_WINDOW = 1000


def pack_dataset(encoded: Dataset | IterableDataset, max_length: int, *, num_proc: int = 1,
                 window: int = STREAM_PACK_WINDOW, row_batched: Sequence[str] = ()) -> Dataset | IterableDataset:
    """Encoded rows packed into bins of at most `max_length` tokens (`pack_rows` per bin), for padding-free training.

    A streamed dataset is packed as it is read, `window` rows at a time. `row_batched`: see `pack_rows`."""
    import numpy as np
    from datasets import Dataset, IterableDataset

    if isinstance(encoded, IterableDataset):
        return IterableDataset.from_generator(_pack_stream, gen_kwargs={
            "encoded": encoded, "max_length": max_length, "window": window, "row_batched": tuple(row_batched)})
    if len(encoded) == 0:
        return encoded
    lengths = (_column_array(encoded, "length") if "length" in encoded.column_names
               else np.array([len(ids) for ids in encoded["input_ids"]]))
    bins = plan_bins(lengths, max_length)
    source = encoded.select_columns([c for c in encoded.column_names if c != "length"])

    def pack_batch(batch: dict[str, list]) -> dict[str, list]:
        flat = [i for indices in batch["indices"] for i in indices]
        rows = source[flat]
        bins_out = []
        start = 0
        for indices in batch["indices"]:
            members = [{k: rows[k][start + j] for k in rows} for j in range(len(indices))]
            start += len(indices)
            bins_out.append(pack_rows(members, row_batched=row_batched))
        keys = sorted({k for b in bins_out for k in b})  # a bin of text rows has no media keys: None there
        return {key: [b.get(key) for b in bins_out] for key in keys}

    packed = Dataset.from_dict({"indices": bins}).map(
        pack_batch, batched=True, batch_size=256, remove_columns=["indices"],
        num_proc=num_proc if num_proc > 1 else None, desc="Packing")
    logger.info("packed %d rows into %d rows of at most %d tokens (%.1f%% filled)", len(encoded), len(packed),
                max_length, 100.0 * float(lengths.sum()) / (len(packed) * max_length))
    return packed


def _pack_stream(encoded: IterableDataset, max_length: int, window: int,
                 row_batched: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    buffer: list[dict[str, Any]] = []

    def flush() -> Iterator[dict[str, Any]]:
        for indices in plan_bins([len(row["input_ids"]) for row in buffer], max_length):
            yield pack_rows([buffer[i] for i in indices], row_batched=row_batched)
        buffer.clear()

    for row in encoded:
        buffer.append(row)
        if len(buffer) >= window:
            yield from flush()
    yield from flush()


def _column_array(dataset: Dataset, name: str) -> np.ndarray:
    import numpy as np

    return np.asarray(dataset.select_columns([name]).with_format("numpy")[name])
