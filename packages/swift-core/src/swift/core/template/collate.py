"""Encoded rows -> a batch of torch tensors, padded or padding-free."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from swift.core.template.encode import IGNORE_INDEX
from swift.core.template.errors import TemplateError


def collate(rows: Sequence[dict], *, pad_id: int, padding_free: bool = False,
            padding_side: Literal["right", "left"] = "right") -> dict[str, Any]:
    """Stack encoded rows (plain, KTO or preference) into tensors.

    Padded: `input_ids` [B, T] filled with `pad_id`, `labels` [B, T] with -100, `attention_mask` [B, T].
    Padding-free: one row [1, sum T_i] with `position_ids` restarting at 0 for each sequence; the first label of
    every sequence is -100 so that no token is trained to predict the next sequence's start.
    Preference rows give the same keys prefixed `chosen_` and `rejected_`; KTO rows add `label` [B] (bool).
    Rows with per-token weights (`loss_scale`, a weighting `--loss_scale`) give `loss_scale` [B, T] float, 0 on
    padding, laid out like `labels`.
    """
    import torch

    if not rows:
        raise TemplateError("cannot collate an empty batch")
    prefixes = ("chosen_", "rejected_") if "chosen_input_ids" in rows[0] else ("",)
    batch: dict[str, Any] = {}
    for prefix in prefixes:
        ids = [list(row[prefix + "input_ids"]) for row in rows]
        labels = [list(row.get(prefix + "labels") or [IGNORE_INDEX] * len(i)) for row, i in zip(rows, ids, strict=True)]
        if padding_free:
            part = _flatten(ids, labels)
        else:
            part = _pad(ids, labels, pad_id, padding_side)
        batch.update({prefix + key: torch.tensor(value, dtype=torch.long) for key, value in part.items()})
        if rows[0].get(prefix + "loss_scale") is not None:
            scales = [list(row[prefix + "loss_scale"]) for row in rows]
            width = batch[prefix + "input_ids"].shape[-1]
            if padding_free:
                flat = [[w for row in scales for w in row]]
            else:
                flat = [([0.0] * (width - len(row)) + row) if padding_side == "left" else row + [0.0] * (width - len(row))
                        for row in scales]
            batch[prefix + "loss_scale"] = torch.tensor(flat, dtype=torch.float32)
    if "label" in rows[0]:
        batch["label"] = torch.tensor([bool(row["label"]) for row in rows])
    return batch


def _pad(ids: list[list[int]], labels: list[list[int]], pad_id: int, side: str) -> dict[str, list[list[int]]]:
    width = max(len(i) for i in ids)
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for row_ids, row_labels in zip(ids, labels, strict=True):
        n = width - len(row_ids)
        fill = (lambda values, value, n=n: [value] * n + values) if side == "left" else (
            lambda values, value, n=n: values + [value] * n)
        out["input_ids"].append(fill(row_ids, pad_id))
        out["labels"].append(fill(row_labels, IGNORE_INDEX))
        out["attention_mask"].append(fill([1] * len(row_ids), 0))
    return out


def _flatten(ids: list[list[int]], labels: list[list[int]]) -> dict[str, list[list[int]]]:
    flat_ids: list[int] = []
    flat_labels: list[int] = []
    positions: list[int] = []
    for row_ids, row_labels in zip(ids, labels, strict=True):
        flat_ids += row_ids
        flat_labels += [IGNORE_INDEX, *row_labels[1:]] if row_labels else []
        positions += range(len(row_ids))
    return {"input_ids": [flat_ids], "labels": [flat_labels], "position_ids": [positions]}
