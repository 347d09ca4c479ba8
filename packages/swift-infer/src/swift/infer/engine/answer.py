"""Generated text -> message fields (content, reasoning_content, tool_calls), whole or as a stream of deltas.

`parse_answer` is what a non-streamed response shows. `AnswerStream` feeds text as it is generated and emits only
what can no longer change: the streamed content is always a prefix of `parse_answer`'s, so that the concatenated
deltas of a stream equal the non-streamed answer. Text that may be the start of a tool call (or of `</think>`, or
trailing whitespace that the final answer strips) is held back until it is decided.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from swift.core.template import parse_response

logger = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Where a tool call starts, by the template's response format (see swift.core.template.parse)
_CALL_MARKERS = {
    "hermes": ("<tool_call>",),
    "internlm2": ("<|action_start|>",),
    "mistral": ("[TOOL_CALLS]",),
    "deepseek": ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>"),
    "react": ("Action:",),  # react_en / react_zh: "Action: name\nAction Input: {...}"
    "qwen": ("✿FUNCTION✿",),  # qwen_en / qwen_zh (Qwen-Agent): "✿FUNCTION✿: name\n✿ARGS✿: {...}"
}
_PYTHON_TAG = "<|python_tag|>"
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")


@dataclass
class Answer:
    content: str
    reasoning_content: str | None
    tool_calls: list[dict[str, Any]] | None  # OpenAI wire form, each with an id


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class AnswerParser:
    """How one request's answer is read: the template's format, whether tools were offered, whether the prompt
    already opened a `<think>` block (DeepSeek-R1, Qwen3-Thinking: the answer starts inside it).

    `prefix`: `--response_prefix`, which ended the prompt, so the generated text lacks it: it is put back first."""

    def __init__(self, response_format: str, stop_words: tuple[str, ...] = (), *, has_tools: bool,
                 opens_think: bool, prefix: str = "") -> None:
        self.response_format = response_format if has_tools else "plain"
        self.stop_words = stop_words
        self.opens_think = opens_think
        self.prefix = prefix

    @classmethod
    def for_template(cls, template: Any, *, has_tools: bool, opens_think: bool) -> AnswerParser:
        """The parser of answers to `template`'s prompts: its agent format (`--agent_template`, else the family's),
        its stop words and its `--response_prefix`."""
        return cls(template.response_format, tuple(template.stop_words), has_tools=has_tools,
                   opens_think=opens_think, prefix=template.options.response_prefix or "")

    def _full_text(self, text: str) -> str:
        text = self.prefix + text
        # a prefix of "<think>\n" opens the block itself (and makes the prompt end with <think>)
        return THINK_OPEN + text if self.opens_think and not text.lstrip().startswith(THINK_OPEN) else text

    def parse(self, text: str) -> Answer:
        text = self._full_text(text).rstrip()
        stripped = True
        while stripped:  # the template's stop words end an answer; they are not part of it
            stripped = False
            for word in self.stop_words:
                if word and text.endswith(word):
                    text, stripped = text[: -len(word)].rstrip(), True
        parsed = parse_response(text, self.response_format)  # type: ignore[arg-type]
        calls = None
        if parsed["tool_calls"]:
            calls = [{**call, "id": call.get("id") or new_call_id()} for call in parsed["tool_calls"]]
        return Answer(parsed["content"], parsed["reasoning_content"], calls)

    def visible(self, text: str) -> tuple[str, str]:
        """(reasoning, content) of an unfinished answer that later text cannot change."""
        text = self._full_text(text)
        head = text.lstrip()
        if THINK_CLOSE in text:
            reasoning, content = text.split(THINK_CLOSE, 1)
            reasoning = reasoning.lstrip()
            reasoning = reasoning[len(THINK_OPEN):] if reasoning.startswith(THINK_OPEN) else reasoning
            return reasoning.strip("\n"), self._visible_content(content.lstrip("\n"))
        if head.startswith(THINK_OPEN):
            reasoning = head[len(THINK_OPEN):].lstrip("\n")
            return _drop_partial(reasoning, THINK_CLOSE).rstrip(), ""
        if THINK_OPEN.startswith(head):  # "", "<", "<thi": may still become a <think> block
            return "", ""
        return "", self._visible_content(text)

    def _visible_content(self, content: str) -> str:
        content = content.lstrip()
        return content[: self._call_start(content)].rstrip()

    def _call_start(self, content: str) -> int:
        """Where a (possible) tool call starts in `content`; len(content) when none can."""
        fmt = self.response_format
        if fmt == "llama3_json":
            may_call = content.startswith(("{", "[", _PYTHON_TAG)) or _PYTHON_TAG.startswith(content)
            return 0 if may_call else len(content)
        if fmt == "glm4":  # `name\n{json}` and nothing else
            first, newline, rest = content.partition("\n")
            may_call = _NAME.fullmatch(first.strip()) is not None and (not newline or not rest.strip()
                                                                        or rest.lstrip().startswith("{"))
            return 0 if may_call else len(content)
        cut = len(content)
        for marker in _CALL_MARKERS.get(fmt, ()):
            at = content.find(marker)
            cut = min(cut, at if at >= 0 else len(_drop_partial(content, marker)))
        return cut


def _drop_partial(text: str, marker: str) -> str:
    """`text` without a tail that could be the start of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return text[:-size]
    return text


class AnswerStream:
    """Feeds generated text and returns the (reasoning, content) deltas that are safe to send."""

    def __init__(self, parser: AnswerParser) -> None:
        self.parser = parser
        self.text = ""
        self.sent_reasoning = ""
        self.sent_content = ""

    def feed(self, delta: str) -> tuple[str, str]:
        if not delta:
            return "", ""
        self.text += delta
        return self._advance(*self.parser.visible(self.text))

    def finish(self) -> tuple[str, str, list[dict[str, Any]] | None]:
        """The last deltas and the tool calls, from the whole answer."""
        answer = self.parser.parse(self.text)
        reasoning, content = self._advance(answer.reasoning_content or "", answer.content)
        return reasoning, content, answer.tool_calls

    def _advance(self, reasoning: str, content: str) -> tuple[str, str]:
        out = []
        for name, now in (("sent_reasoning", reasoning), ("sent_content", content)):
            sent = getattr(self, name)
            if now.startswith(sent):
                out.append(now[len(sent):])
                setattr(self, name, now)
            else:  # a bug in `visible`: never retract what was sent
                logger.warning("streamed %s diverged from the final answer: %r vs %r", name, sent, now)
                out.append("")
        return out[0], out[1]
