"""`swift infer --adapters CK --val_dataset f.jsonl --result_path out.jsonl` for an encoder-task checkpoint: one
JSON line per row, in dataset order.

    seq_cls              the row + "response" (the predicted label as text) + "probs" (or "logits" for regression)
    embedding            the row + "embedding" (of its messages; "positive_embeddings" / "negative_embeddings"
                         when the row has them)
    reranker, generative the row + "positive_scores" / "negative_scores" (each document's relevance to messages)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swift.infer.engine.tasks import TaskEngine

WINDOW = 64  # rows scored, then written, at a time


def _answer(engine: TaskEngine, rows: list[dict]) -> list[dict[str, Any]]:
    if engine.task_type == "seq_cls":
        return engine.classify([row["messages"] for row in rows])
    answers = []
    for row in rows:
        sides = {side: row.get(f"{side}_messages") or [] for side in ("positive", "negative")}
        if engine.task_type == "embedding":
            vectors, _ = engine.embed([row["messages"], *sides["positive"], *sides["negative"]])
            n = len(sides["positive"])
            answer = {"embedding": vectors[0]}
            if sides["positive"] or sides["negative"]:
                answer |= {"positive_embeddings": vectors[1:1 + n], "negative_embeddings": vectors[1 + n:]}
        else:
            scores, _ = engine.score(row["messages"], [*sides["positive"], *sides["negative"]])
            n = len(sides["positive"])
            answer = {"positive_scores": scores[:n], "negative_scores": scores[n:]}
        answers.append(answer)
    return answers


def run_task_batch(engine: TaskEngine, rows: Any, path: Path) -> int:
    """Score every row into `path` (one JSON line each); returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, len(rows), WINDOW):
            window = [dict(rows[i]) for i in range(start, min(start + WINDOW, len(rows)))]
            for row, answer in zip(window, _answer(engine, window), strict=True):
                f.write(json.dumps({**row, **answer}, ensure_ascii=False) + "\n")
                written += 1
            f.flush()
    return written
