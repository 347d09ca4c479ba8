"""`swift infer --metric acc|rouge` over result lines (scorers: swift.core.metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swift.core import METRICS


def score_results(lines: Iterable[dict[str, Any]], metric: str) -> dict[str, float]:
    """`metric` over result lines (`frontend/batch.py`): rows without a reference are skipped; a row that failed
    (no response) counts as an empty answer."""
    pairs = [(line.get("response") or "", line["labels"]) for line in lines if isinstance(line.get("labels"), str)]
    return METRICS[metric](pairs)
