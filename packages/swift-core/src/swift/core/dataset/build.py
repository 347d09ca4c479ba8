"""Normalised rows -> `datasets.Dataset`, and joining datasets whose columns differ.

`messages` (and `tools`, `images`, `videos`, `audios`) are stored with the `Json` feature: each message comes back exactly as written,
with no `None`-filled keys that a struct column would add (chat templates test `'tool_calls' in message`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from swift.core.dataset.meta import LoadOptions, Row
from swift.core.errors import ConfigError, DatasetRowError

if TYPE_CHECKING:
    from datasets import Dataset, Features

logger = logging.getLogger(__name__)

CHUNK_ROWS = 10_000  # rows turned into Arrow at a time, so that a large file never sits in memory as Python dicts
CANONICAL = ("messages", "tools", "rejected_response", "label", "images", "videos", "audios")


def canonical_features() -> Features:
    from datasets import Features, Json, List, Value

    return Features({"messages": List(Json()), "tools": Json(), "rejected_response": Value("string"),
                     # label: KTO true/false, seq_cls class indices, scores, lists
                     "label": Json(), "images": Json(), "videos": Json(), "audios": Json()})


class BadRows:
    """The rows skipped with `strict=False`: a count and the first few, reported in one warning."""

    SHOWN = 5

    def __init__(self) -> None:
        self.count = 0
        self.first: list[DatasetRowError] = []

    def add(self, error: DatasetRowError) -> None:
        self.count += 1
        if len(self.first) < self.SHOWN:
            self.first.append(error)

    def handle(self, error: DatasetRowError, options: LoadOptions) -> None:
        """Raise the error (`strict`), or count it."""
        if options.strict:
            raise error
        self.add(error)

    def log(self) -> None:
        if self.count:
            more = f"; and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
            logger.warning("skipped %d bad dataset row%s (--strict false): %s%s", self.count,
                           "s" if self.count > 1 else "", "; ".join(str(e) for e in self.first), more)


def rows_to_dataset(rows: Iterable[Row]) -> Dataset:
    """A `Dataset` of normalised rows, built CHUNK_ROWS at a time."""
    iterator = iter(rows)
    parts = []
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        parts.append(_chunk_to_dataset(chunk))
    if not parts:
        from datasets import Dataset

        return Dataset.from_dict({"messages": []}, features=_subset(canonical_features(), ["messages"]))
    return concat_datasets(parts)


def _chunk_to_dataset(rows: list[Row]) -> Dataset:
    from datasets import Dataset, concatenate_datasets

    names = list(dict.fromkeys(key for row in rows for key in row))
    known = [n for n in CANONICAL if n in names]
    dataset = Dataset.from_dict({n: [row.get(n) for row in rows] for n in known},
                                features=_subset(canonical_features(), known))
    extras = [n for n in names if n not in CANONICAL]
    if extras:
        # An extra column keeps its Arrow type when its values agree (str, int...), else it is stored as Json.
        other = Dataset.from_dict({n: [row.get(n) for row in rows] for n in extras}, on_mixed_types="use_json")
        dataset = concatenate_datasets([dataset, other], axis=1)
    return dataset


def concat_datasets(parts: list[Dataset]) -> Dataset:
    """Concatenate datasets row-wise; a missing column is filled with None, a column whose type differs becomes Json."""
    from datasets import Json, Value, concatenate_datasets

    if len(parts) == 1:
        return parts[0]
    names = list(dict.fromkeys(name for part in parts for name in part.column_names))
    target = {}
    for name in names:
        features = [p.features[name] for p in parts if name in p.features and p.features[name] != Value("null")]
        same = all(f == features[0] for f in features)
        target[name] = Value("null") if not features else features[0] if same else Json()
    aligned = []
    for part in parts:
        for name in names:
            if name not in part.column_names:
                part = part.add_column(name, [None] * len(part), feature=target[name])
            elif part.features[name] != target[name]:
                try:
                    part = part.cast_column(name, target[name])
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"column {name!r} has types that cannot be joined across the datasets "
                                      f"({part.features[name]} vs {target[name]}): {e}") from e
        aligned.append(part.select_columns(names))
    return concatenate_datasets(aligned)


def drop_empty_canonical(dataset: Dataset) -> Dataset:
    """Remove optional canonical columns (tools, label...) that no row fills."""
    empty = [n for n in CANONICAL[1:] if n in dataset.column_names
             and dataset.data.column(n).null_count == len(dataset.data)]
    return dataset.remove_columns(empty) if empty else dataset


def _subset(features: Features, names: list[str]) -> Features:
    from datasets import Features

    return Features({n: features[n] for n in names})
