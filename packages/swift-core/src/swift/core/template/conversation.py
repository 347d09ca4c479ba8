"""A conversation made ready to render (agent format, non-thinking prefix) and its loss weights over the text.

`prepare` decides each assistant turn's weight on the row as given (`--loss_scale` base, the messages' `loss` /
`loss_scale` fields), then writes tools in the agent format; `segments` turns the assistant spans found in the
rendered text into weighted character ranges (`loss_scale.weigh`). `raw_text` is `--use_chat_template false`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swift.core.template import agent as _agent
from swift.core.template.errors import TemplateError
from swift.core.template.loss_scale import LossPlan, Segment, turn_weights, weigh

Span = tuple[int, int, int]  # (message index, start, end) in the rendered text


@dataclass
class Prepared:
    """What is rendered (`messages`, `tools`) and, per rendered assistant message, the ranges of its content that
    come from which input message (`pieces`; None: the whole turn is that message). `weights`: per input message,
    None or (weight, fixed)."""

    messages: list[dict]
    tools: list | None
    weights: list[tuple[float, bool] | None]
    pieces: dict[int, list[tuple[int, int, int]]] | None = None
    contents: dict[int, str] | None = None  # the agent-written assistant texts (media rows split `messages` later)
    continues: bool = False  # a ReAct row ending with a tool result: the prompt continues the assistant's turn


def prepare(messages: list[dict], tools: list | None, plan: LossPlan, *, agent: _agent.AgentTemplate | None,
            default_system: str | None, non_thinking_prefix: str = "") -> Prepared:
    """`messages` (checked by `encode.prepare_messages`) ready to render. `agent`: write tools in that format
    (None: the chat template renders them); `non_thinking_prefix`: put it before answers without reasoning."""
    if non_thinking_prefix:
        messages = _add_non_thinking_prefix(messages, non_thinking_prefix, only_last_round=plan.base == "last_round")
    weights = turn_weights(messages, plan.base)
    if plan.is_binary:
        odd = [w for w in weights if w is not None and w[0] not in (0.0, 1.0)]
        if odd:
            raise TemplateError(f"a message's loss_scale is {odd[0][0]}, but --loss_scale {plan.base} gives only 0/1 "
                                "labels: use 0 or 1, or a --loss_scale with weights (hermes, react...)")
    if agent is None:
        return Prepared(messages, tools, weights)
    written = _agent.apply(agent, messages, tools, default_system=default_system)
    continues = messages[-1]["role"] == "tool" and written.messages[-1]["role"] == "assistant"
    contents = {index: written.messages[index]["content"] for index in written.pieces}
    return Prepared(written.messages, None, weights, written.pieces, contents, continues)


def _add_non_thinking_prefix(messages: list[dict], prefix: str, *, only_last_round: bool) -> list[dict]:
    """ms-swift's `--add_non_thinking_prefix`: answers that do not start with `<think>` (and have no
    reasoning_content) start with the empty think block; with `last_round`, only the turns after the last user."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] in ("user", "tool")), default=-1)
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if (message["role"] == "assistant" and isinstance(content, str) and not content.startswith("<think>")
                and not message.get("reasoning_content") and (not only_last_round or i > last_user)):
            message = {**message, "content": prefix + content}
        out.append(message)
    return out


def segments(prepared: Prepared, text: str, found: Sequence[Span], plan: LossPlan) -> list[Segment]:
    """Weighted character ranges of `text`: the trained assistant spans (rules applied per piece), plus, under
    `all`, everything outside the assistant spans at weight 1."""
    out: list[Segment] = []
    if plan.base == "all":
        position = 0
        for _, start, end in found:
            out.append((position, start, 1.0))
            position = end
        out.append((position, len(text), 1.0))
    for index, start, end in found:
        parts = _parts(prepared, text, index, start, end)
        for part_start, part_end, origin in parts:
            weight = prepared.weights[origin] if 0 <= origin < len(prepared.weights) else None
            if weight is None or weight[0] <= 0:
                continue
            out += weigh(text, part_start, part_end, weight[0], () if weight[1] else plan.rules)
    return [segment for segment in out if segment[1] > segment[0]]


def _parts(prepared: Prepared, text: str, index: int, start: int, end: int) -> list[tuple[int, int, int]]:
    """The span of rendered assistant message `index` cut into (start, end, input message) parts. Agent-written
    messages: the pieces of their content; what the template adds around it (end-of-turn) goes with the last
    piece; tool results inside (ReAct) belong to no piece."""
    if prepared.pieces is None or prepared.contents is None:
        return [(start, end, index)]
    pieces = prepared.pieces.get(index)
    if not pieces:
        return []
    content = prepared.contents[index]
    at = text.find(content, start, end + 1) if content else start
    shift = 0
    if at < 0:  # a template that trims the content (Gemma)
        stripped = content.strip()
        at = text.find(stripped, start, end + 1) if stripped else -1
        shift = len(content) - len(content.lstrip())
    if at < 0:
        raise TemplateError("the chat template does not render an agent turn's text as written, so where its tool "
                            "results sit cannot be found: use the model's own agent format or another template")
    parts = [(max(start, at - shift + a), min(end, at - shift + b), origin) for a, b, origin in pieces]
    last = pieces[-1][2]
    content_end = at - shift + pieces[-1][1]
    return [(start, parts[0][0], pieces[0][2]), *parts, (content_end, end, last)]


def raw_text(messages: list[dict], tokenizer: Any, *, is_generation: bool, chat_template: str) -> tuple[str, list[Span]]:
    """`--use_chat_template false`: ms-swift's generation format, the turns' texts one after the other with no
    roles or system prompt, BOS first where the model takes one, EOS after the last answer."""
    text = _bos(tokenizer, chat_template)
    found: list[Span] = []
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if message["role"] == "system":
            continue
        content = message.get("content")
        if not isinstance(content, str):
            raise TemplateError("--use_chat_template false renders text turns only; this row has content parts")
        start = len(text)
        text += content
        if message["role"] == "assistant":
            if i == last and not is_generation:
                text += getattr(tokenizer, "eos_token", None) or ""
            found.append((i, start, len(text)))
    return text, found


def _bos(tokenizer: Any, chat_template: str) -> str:
    """The BOS text where the model takes one: its chat template writes it (Llama 3, Mistral) or its tokenizer
    puts it before what it encodes; else ''."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return ""
    if "bos_token" in chat_template:
        return bos
    ids = tokenizer("a")["input_ids"]
    return bos if ids and ids[0] == bos_id else ""
