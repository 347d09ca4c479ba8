"""`swift infer --val_dataset f.jsonl --result_path out.jsonl`: one JSON line per row, written as answers come.

Rows are submitted a window at a time (the engine batches them) and written in dataset order, `--write_batch_size`
lines at a time (each batch flushed to disk), so an interrupted run leaves a file of complete answers for the first
rows. Run again with the same
`--result_path` and it resumes after the last complete line (a half-written last line is dropped and redone).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from swift.core import ConfigError, SwiftError
from swift.infer.engine.engine import InferEngine
from swift.infer.protocol import ChatCompletionResponse, RequestConfig

logger = logging.getLogger(__name__)


def default_result_path(base: str | None) -> Path:
    return Path(base or ".") / "infer_result" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def count_done(path: Path) -> int:
    """Complete lines already in `path`; a trailing partial line (an interrupted write) is cut off."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
        logger.warning("%s: dropped a half-written last line; that row is answered again", path)
    lines = data[:end].splitlines()
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except ValueError as e:
            raise ConfigError(f"--result_path {path}: line {number} is not JSON; it is not a results file "
                              "of this command, choose another path") from e
    return len(lines)


def split_row(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A dataset row -> (request, labels): a trailing assistant message is the reference answer, not input."""
    messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
    labels = None
    if messages and messages[-1].get("role") == "assistant":
        labels = messages.pop().get("content")
    request: dict[str, Any] = {"messages": messages}
    tools = row.get("tools")
    if isinstance(tools, str) and tools.strip():
        tools = json.loads(tools)
    if tools:
        request["tools"] = [t if "function" in t else {"type": "function", "function": t} for t in tools]
    for column in ("images", "videos", "audios"):  # a multimodal row's media (paths made absolute by the loader)
        if row.get(column):
            request[column] = list(row[column])
    return request, labels


def result_line(index: int, request: dict[str, Any], labels: str | None, future: Future) -> dict[str, Any]:
    query = next((m.get("content") for m in reversed(request["messages"]) if m.get("role") == "user"), None)
    line: dict[str, Any] = {"index": index, "query": query}
    try:
        response: ChatCompletionResponse = future.result()
    except SwiftError as e:  # a row the model cannot take (too long, refused by the template): say so, go on
        return {**line, "response": None, "labels": labels, "error": str(e)}
    message = response.choices[0].message
    line |= {"response": message.content, "labels": labels}
    if message.reasoning_content is not None:
        line["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        line["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    line["messages"] = request["messages"]
    for column in ("images", "videos", "audios"):
        if request.get(column):
            line[column] = request[column]
    line["usage"] = response.usage.model_dump()
    return line


def append_lines(out: Any, lines: list[str]) -> None:
    """Append complete lines to the results file, on disk before it returns (a crash mid-write leaves at most a
    partial last line, which `count_done` drops)."""
    if not lines:
        return
    text = "".join(lines)
    lines.clear()  # before writing: a failed write is never retried on top of its own partial line
    out.write(text)
    out.flush()
    os.fsync(out.fileno())


def run_batch(engine: InferEngine, rows: Sequence[dict[str, Any]], config: RequestConfig, result_path: Path, *,
              window: int, write_batch_size: int = 1) -> int:
    """Answer `rows` into `result_path` (resuming it); the number of rows answered by this run.

    `write_batch_size`: answers appended together (-1 or 0: all at the end). Answers held back are still written
    when the run stops early (an exception, Ctrl-C), so only rows not yet answered are lost."""
    from tqdm import tqdm

    result_path.parent.mkdir(parents=True, exist_ok=True)
    done = count_done(result_path)
    if done:
        logger.info("%s has %d answers already; resuming at row %d", result_path, done, done)
    if done >= len(rows):
        logger.info("every row of the dataset is answered in %s", result_path)
        return 0
    in_flight: deque[tuple[int, dict, str | None, Future]] = deque()
    todo = iter(range(done, len(rows)))
    written = 0
    chunk = write_batch_size if write_batch_size > 0 else len(rows)
    pending: list[str] = []
    with result_path.open("a", encoding="utf-8") as out, tqdm(total=len(rows), initial=done, unit="row") as bar:
        try:
            while True:
                while len(in_flight) < window and (index := next(todo, None)) is not None:
                    request, labels = split_row(dict(rows[index]))
                    in_flight.append((index, request, labels, _submit(engine, request, config)))
                if not in_flight:
                    break
                pending.append(json.dumps(result_line(*in_flight.popleft()), ensure_ascii=False) + "\n")
                written += 1
                bar.update(1)
                if len(pending) >= chunk:
                    append_lines(out, pending)
        finally:  # the answers already made are complete lines: keep them, whatever stopped the run
            append_lines(out, pending)
    logger.info("wrote %d answers to %s", written, result_path)
    return written


def _submit(engine: InferEngine, request: dict, config: RequestConfig) -> Future:
    try:
        return engine.submit(request, config)
    except (SwiftError, ValueError) as e:  # ValueError: pydantic's, for a malformed row
        future: Future = Future()
        future.set_exception(e)
        return future
