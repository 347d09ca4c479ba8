"""Rows -> `input_ids` and `labels`: render with the chat template, find the assistant's spans, map them to tokens.

`input_ids` are exactly `tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)` (with
`add_generation_prompt=True` when the last message is not the assistant's): both tokenize the same rendered text
the same way. Labels are -100 except on tokens that overlap an assistant span (see `spans.py`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from collections.abc import Sequence
from typing import Any, Literal

from swift.core.template.agent import normalize_messages
from swift.core.template.errors import RowTooLongError, TemplateError
from swift.core.template.loss_scale import Segment, token_weights

IGNORE_INDEX = -100
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
    messages = normalize_messages(messages)  # ms-swift's tool_call / tool_response roles
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
    weights = token_weights(offsets, ids, [(start, end, 1.0) for start, end in spans], special_ids)
    return [token if weight > 0 else IGNORE_INDEX for token, weight in zip(ids, weights, strict=True)]


def tokenize_weighted(tokenizer: Any, text: str, segments: Sequence[Segment],
                      special_ids: frozenset[int] = frozenset()) -> tuple[list[int], list[float]]:
    """Token ids of `text` and each token's loss weight (`loss_scale.token_weights`; 0: no loss)."""
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding.get("offset_mapping")
    except NotImplementedError:
        offsets = None
    if offsets is not None:
        ids = list(encoding["input_ids"])
        return ids, token_weights(offsets, ids, segments, special_ids)
    # without offsets: tokenize the pieces between segment boundaries, carry their weights onto the whole text's ids
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    cuts = sorted({0, len(text), *(p for a, b, _ in segments for p in (a, b))})
    piece_ids: list[int] = []
    piece_weights: list[float] = []
    for a, b in itertools.pairwise(cuts):
        part = list(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) if b > a else []
        weight = max((w for start, end, w in segments if start <= a and b <= end), default=0.0)
        piece_ids += part
        piece_weights += [weight] * len(part)
    return ids, align_weights(piece_ids, piece_weights, ids)


def align_weights(source_ids: list[int], weights: list[float], target_ids: list[int]) -> list[float]:
    """`align_labels` for per-token weights: a changed run takes the largest weight of the run it replaces."""
    if source_ids == target_ids:
        return list(weights)
    out = [0.0] * len(target_ids)
    matcher = difflib.SequenceMatcher(a=source_ids, b=target_ids, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            out[b0:b1] = weights[a0:a1]
        elif tag == "replace":
            out[b0:b1] = [max(weights[a0:a1], default=0.0)] * (b1 - b0)
    return out


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
    kept = truncate_columns({"input_ids": ids, "labels": labels}, max_length, strategy)
    return kept["input_ids"], kept["labels"]


def truncate_columns(columns: dict[str, list], max_length: int | None, strategy: TruncationStrategy) -> dict[str, list]:
    """`truncate` for several per-token columns of one row (ids, labels, loss_scale) at once."""
    length = len(columns["input_ids"])
    if max_length is None or length <= max_length:
        return columns
    if strategy == "delete":
        raise RowTooLongError(length, max_length)
    cut = slice(-max_length, None) if strategy == "left" else slice(None, max_length)
    return {key: values[cut] for key, values in columns.items()}


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
