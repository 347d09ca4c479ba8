"""Result rows of `swift eval`: results.json and the table printed at the end (models side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]  # {"dataset", "subset", "metric", "score", "num"} (+ "model" when several were evaluated)


def write_results(rows: list[Row], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def format_table(rows: list[Row], models: list[str]) -> str:
    """One line per (dataset, subset, metric); one score column per model (the base first, then adapters)."""
    keys: list[tuple[str, str, str]] = []
    scores: dict[tuple[str, str, str], dict[str, float]] = {}
    nums: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["dataset"], row["subset"], row["metric"])
        if key not in scores:
            keys.append(key)
            scores[key] = {}
        scores[key][row.get("model", models[0])] = row["score"]
        nums[key] = row["num"]
    score_heads = ["score"] if len(models) == 1 else models
    head = ["dataset", "subset", "metric", *score_heads, "n"]
    body = [[*key, *(_score(scores[key].get(m)) for m in models), str(nums[key])] for key in keys]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: list[str]) -> str:
        return " | ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths,
                                                                                                      strict=True)))

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(line) for line in body)])


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
