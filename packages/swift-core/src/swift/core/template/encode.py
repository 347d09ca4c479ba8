"""Rows -> `input_ids` and `labels`: render with the chat template, find the assistant's spans, map them to tokens.

`input_ids` are exactly `tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)` (with
`add_generation_prompt=True` when the last message is not the assistant's): both tokenize the same rendered text
the same way. Labels are -100 except on tokens that overlap an assistant span (see `spans.py`).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import itertools
import json
from collections.abc import Sequence
from typing import Any, Literal

from swift.core.template.errors import RowTooLongError, TemplateError

IGNORE_INDEX = -100
LossScale = Literal["default", "last_round", "all"]
TruncationStrategy = Literal["delete", "left", "right"]


def prepare_messages(messages: Any, *, default_system: str | None, tool_call_id_length: int | None) -> list[dict]:
    """A checked copy of `messages` with the default system prompt and, where the template needs them, tool-call ids."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TemplateError("'messages' must be a non-empty list of {'role': ..., 'content': ...} objects")
    # keys set to None are dropped, as apply_chat_template does, so every render sees the same messages
    messages = [{key: value for key, value in m.items() if value is not None} for m in messages]
    for index, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise TemplateError(f"message {index} has no 'role'")
    if default_system is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": default_system})
    if tool_call_id_length:
        _fill_tool_call_ids(messages, tool_call_id_length)
    return messages


def _fill_tool_call_ids(messages: list[dict], length: int) -> None:
    """Give calls without an id a deterministic one, and their results the id of the call they answer, in order."""
    pending: list[str] = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = [dict(call) for call in message["tool_calls"]]
            for number, call in enumerate(calls):
                if not call.get("id"):
                    call["id"] = hashlib.sha256(f"{index}:{number}".encode()).hexdigest()[:length]
            message["tool_calls"] = calls
            pending = [call["id"] for call in calls]
        elif message["role"] == "tool" and pending:
            if not message.get("tool_call_id"):
                message["tool_call_id"] = pending.pop(0)
            elif message["tool_call_id"] in pending:
                pending.remove(message["tool_call_id"])


def dropped_parts(messages: list[dict], text: str, spans: Sequence[tuple[int, int, int]]) -> set[str]:
    """What of the assistant's turns the chat template did not render (so cannot be trained): tool calls, reasoning."""
    dropped = set()
    for index, start, end in spans:
        message = messages[index]
        for call in message.get("tool_calls") or []:
            name = (call.get("function") or call).get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and name not in text[start:end]:
                dropped.add("tool calls")
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning.strip() and reasoning.strip() not in text[start:end]:
            dropped.add("reasoning_content")
    return dropped


def tokenize_with_labels(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]],
                         special_ids: frozenset[int] = frozenset()) -> tuple[list[int], list[int]]:
    """Token ids of `text` (as apply_chat_template tokenizes it) and labels: the id where a token overlaps a span.

    An added token that starts before a span is left out: with `rstrip` (Phi-3's `<|assistant|>`) it swallows the
    whitespace after it, and so the start of the answer, but it is still the header.
    """
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding.get("offset_mapping")
    except NotImplementedError:  # tokenizers without offsets (pure-Python backends)
        offsets = None
    if offsets is None:
        return _tokenize_by_segments(tokenizer, text, spans)
    ids = list(encoding["input_ids"])
    return ids, _labels_from_offsets(ids, offsets, spans, special_ids)


def _labels_from_offsets(ids: list[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
                         special_ids: frozenset[int]) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    starts = [a for a, _ in offsets]
    ends = [b for _, b in offsets]  # both non-decreasing: tokens come in text order
    for start, end in spans:
        first = bisect.bisect_right(ends, start)  # the first token that ends inside the span
        stop = bisect.bisect_left(starts, end)  # the first token that starts after it
        if first < stop and starts[first] < start and ids[first] in special_ids:
            first += 1
        labels[first:stop] = ids[first:stop]
    return labels


def _tokenize_by_segments(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Without offsets: tokenize the pieces between span boundaries and align them with the whole text's ids."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    cuts = sorted({0, len(text), *(p for span in spans for p in span)})
    piece_ids: list[int] = []
    piece_labels: list[int] = []
    for a, b in itertools.pairwise(cuts):
        part = list(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) if b > a else []
        inside = any(start <= a and b <= end for start, end in spans)
        piece_ids += part
        piece_labels += part if inside else [IGNORE_INDEX] * len(part)
    return ids, align_labels(piece_ids, piece_labels, ids)


def align_labels(source_ids: list[int], source_labels: list[int], target_ids: list[int]) -> list[int]:
    """Carry labels from one tokenization of a text to another: equal runs keep theirs, changed runs take any."""
    if source_ids == target_ids:
        return list(source_labels)
    labels = [IGNORE_INDEX] * len(target_ids)
    matcher = difflib.SequenceMatcher(a=source_ids, b=target_ids, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            labels[b0:b1] = source_labels[a0:a1]
        elif tag == "replace" and any(label != IGNORE_INDEX for label in source_labels[a0:a1]):
            labels[b0:b1] = target_ids[b0:b1]
    return labels


def truncate(ids: list[int], labels: list[int], max_length: int | None,
             strategy: TruncationStrategy) -> tuple[list[int], list[int]]:
    """Apply `max_length`: "left" keeps the end, "right" the start, "delete" raises `RowTooLongError`."""
    if max_length is None or len(ids) <= max_length:
        return ids, labels
    if strategy == "delete":
        raise RowTooLongError(len(ids), max_length)
    if strategy == "left":
        return ids[-max_length:], labels[-max_length:]
    return ids[:max_length], labels[:max_length]


def preference_sides(row: dict) -> tuple[list, list] | None:
    """`(chosen_messages, rejected_messages)` of a preference row, or None for other rows.

    Accepted: `messages` ending with the chosen answer plus `rejected_response` (text or message), or `chosen` and
    `rejected` (text, one message, or message lists) after `prompt` or `messages`.
    """
    if row.get("rejected_response") is not None:
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise TemplateError("a row with 'rejected_response' needs 'messages' ending with the chosen answer")
        return messages, messages[:-1] + _as_messages(row["rejected_response"])
    if row.get("chosen") is not None and row.get("rejected") is not None:
        prompt = row.get("prompt", row.get("messages")) or []
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return list(prompt) + _as_messages(row["chosen"]), list(prompt) + _as_messages(row["rejected"])
    return None


def _as_messages(answer: Any) -> list[dict]:
    if isinstance(answer, str):
        return [{"role": "assistant", "content": answer}]
    if isinstance(answer, dict):
        return [answer]
    if isinstance(answer, list):
        return list(answer)
    raise TemplateError(f"a preference answer must be text, a message or a list of messages, not {type(answer).__name__}")


def read_tools(row: dict) -> list | None:
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise TemplateError(f"'tools' is a string but not JSON: {e}") from e
    if tools is not None and not isinstance(tools, list):
        raise TemplateError(f"'tools' must be a list of function schemas, not {type(tools).__name__}")
    return tools
