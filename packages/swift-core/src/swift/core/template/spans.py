"""Where each assistant turn sits in a rendered conversation, found by rendering prefixes of it.

The chat template is the ground truth, so nothing here knows a model's format. For the assistant message at
index i, with F the whole conversation rendered:

- its start is the end of `prompt = render(messages[:i], add_generation_prompt=True)` (what the model sees before
  it answers at inference), when F starts with it;
- its end is the end of `through = render(messages[:i + 1])`, when F starts with it, less trailing whitespace
  (the newline after `<|im_end|>` belongs to the next turn's header, as at inference, where generation stops at
  the end-of-turn token).

Some templates render a prefix differently from the same messages inside the whole conversation. Then:

- start: if F starts with `render(messages[:i])` and only the generation prompt disagrees (Qwen3 with
  `enable_thinking=False` adds an empty think block that earlier turns lack; DeepSeek-R1 opens `<think>` in the
  prompt and drops it from answers), the start is where they diverge.
  Otherwise (Mistral moves the system prompt and tool list into the last user turn) the prompt's tail from the
  previous message's content on is searched in F after the previous turn (else the longest tail of the prompt
  that F has there), and the turn starts after it.
- end: the turn's own output (`through` after the text that precedes the turn in F, else after `prompt`) is
  looked for at the start in F; failing that, where `through` and F diverge if all `through` has beyond that is
  special tokens (Phi-3 appends `<|endoftext|>` to a conversation that ends there); failing that, the longest tail
  of the output that F has at the start, give or take leading whitespace (Qwen3 drops the reasoning of answers
  before the last user turn, and strips the newlines that start the last answer: the template changed the front
  of the output and kept the rest verbatim).

Anything else raises `TemplateError` rather than guess: wrong labels are worse than a refused row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from swift.core.template.errors import TemplateError

# (messages, add_generation_prompt) -> rendered text, or None when the template refuses that prefix
Render = Callable[[list[dict], bool], "str | None"]


def find_assistant_spans(messages: Sequence[dict], full_text: str, render: Render,
                         special: re.Pattern | None) -> list[tuple[int, int, int]]:
    """`(message_index, start, end)` character spans in `full_text` of every assistant turn, in order.

    `special` matches the tokenizer's added tokens; a boundary never falls inside one. Every turn is located, also
    for `loss_scale="last_round"`: each turn's end bounds where the next one is searched.
    """
    spans: list[tuple[int, int, int]] = []
    previous_end = 0
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:
            raise TemplateError("the conversation opens with an assistant message, which answers no prompt: put a "
                                "user (or system) message first")
        prompt = render(list(messages[:i]), True)
        if prompt is None:
            raise TemplateError(f"the chat template refuses the conversation before assistant message {i} on its "
                                "own, so where that answer starts cannot be found")
        before = messages[i - 1].get("content")
        start = _find_start(full_text, prompt, lambda i=i: render(list(messages[:i]), False), previous_end, special,
                            before if isinstance(before, str) else "")
        through = full_text if i == last else render(list(messages[: i + 1]), False)
        end = _find_end(full_text, through, prompt, start, special)
        if end is None:
            raise TemplateError(f"cannot find where assistant message {i} ends in the rendered conversation: the "
                                "chat template renders it differently inside the conversation than at its end")
        spans.append((i, start, end))
        previous_end = end
    return spans


def _find_start(text: str, prompt: str, render_bare: Callable[[], str | None], low: int,
                special: re.Pattern | None, before: str) -> int:
    """`before`: the content of the message before the turn; the prompt's tail from it on is what must align."""
    if text.startswith(prompt) and len(prompt) >= low:
        return len(prompt)
    bare = render_bare()
    if bare is not None and text.startswith(bare) and len(bare) >= low:
        diverge = _snap(_common_prefix(prompt, text), (prompt, text), special)
        if diverge >= len(bare):
            return diverge
    # the prompt from the previous message's content on (as given, else trimmed, as templates may trim it)
    content = next((c for c in (before, before.strip()) if c and c in prompt), "")
    anchor = prompt[prompt.rfind(content):] if content else ""
    at = text.find(anchor, low) if anchor.strip() else -1
    start = at + len(anchor) if at >= 0 else _align_tail(prompt, text, low)
    if start is None:
        raise TemplateError("cannot find where an assistant turn starts in the rendered conversation: the chat "
                            "template renders the conversation before it differently on its own")
    return start


def _find_end(text: str, through: str | None, prompt: str, start: int, special: re.Pattern | None) -> int | None:
    if through is None:
        return None
    if text.startswith(through) and len(through) >= start:
        return _strip_end(text, start, len(through))
    # the turn as rendered on its own: after what precedes it in the whole text, else after its prompt, else after
    # the last place where `through` has the longest tail of what precedes the turn in the whole text
    if through.startswith(text[:start]):
        output = through[start:]
    elif through.startswith(prompt):
        output = through[len(prompt):]
    else:
        output_start = _align_tail(text[:start], through, 0, last=True)
        output = through[output_start:] if output_start is not None else ""
    if output and text.startswith(output, start):
        return _strip_end(text, start, start + len(output))
    diverge = _snap(_common_prefix(through, text), (through, text), special)
    if diverge > start and _only_special(through[diverge:], special):
        return _strip_end(text, start, diverge)
    rest = text[start:]
    leading = len(rest) - len(rest.lstrip())  # the whole text may keep whitespace that the turn alone lost
    for cut in range(len(output)):
        tail = output[cut:]
        if not tail.strip():
            break
        for at in range(start, start + leading + 1):
            if text.startswith(tail, at):
                return _strip_end(text, start, at + len(tail))
    return None


def _strip_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] holds, a[:high] == b[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


def _snap(position: int, texts: tuple[str, ...], special: re.Pattern | None) -> int:
    """Move `position` back to the start of an added token that it would cut in any of `texts`."""
    if special is None:
        return position
    for text in texts:
        window_start = max(0, position - 64)
        for match in special.finditer(text, window_start, position + 64):
            if match.start() < position < match.end():
                position = match.start()
    return position


def _only_special(text: str, special: re.Pattern | None) -> bool:
    if special is not None:
        text = special.sub("", text)
    return not text.strip()


def _align_tail(prompt: str, text: str, low: int, *, last: bool = False) -> int | None:
    """End of the first (or last) occurrence in `text[low:]` of the longest tail of `prompt` that occurs there."""
    if not prompt or text.find(prompt[-1], low) < 0:
        return None
    found, missing = 1, len(prompt) + 1  # prompt[-found:] occurs at or after low; prompt[-missing:] does not
    if text.find(prompt, low) >= 0:
        found = missing = len(prompt)
    while missing - found > 1:
        mid = (found + missing) // 2
        if text.find(prompt[-mid:], low) >= 0:
            found = mid
        else:
            missing = mid
    tail = prompt[-found:]
    if not tail.strip():
        return None
    return (text.rfind(tail, low) if last else text.find(tail, low)) + found
