"""A patch of EvalScope (1.14.x), applied only inside the `swift eval` worker process and only while it runs.

EvalScope scores a multiple-choice reply from its text alone: `ANSWER: X`, else the last capital letter of the reply.
Small chat models often answer by quoting the option ("A) Tokyo", "The answer is D) Yellow"): the last capital is
then a letter of the option's text (T, Y), which is no label, so a right answer scores as no answer (measured on the
packaged SmolLM2 and the acceptance data: 0 of 10 scored, with "A) Tokyo" among the replies). When EvalScope finds
no answer, `mcq_label_fallback` reads a label that opens the reply (or follows "answer is"), else the one option
whose text the reply names. Replies EvalScope does read are left exactly as it scores them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

_LEADING_LABEL = re.compile(r"^\W*(?:(?:the\s+)?(?:correct\s+)?answer\s*(?:is)?\s*:?\s*)?[\(\[]?([A-J])[\)\].:](?:\s|$)",
                            re.IGNORECASE)


def fallback_label(reply: str, choices: list[str]) -> str:
    """The label a reply names when it has no `ANSWER: X`: a leading `A)` / `(A)` / `A.`, else the only option whose
    text it contains; '' when neither (or when it names several options)."""
    labels = [chr(ord("A") + i) for i in range(len(choices))]
    match = _LEADING_LABEL.match(reply.strip())
    if match and match.group(1).upper() in labels:
        return match.group(1).upper()
    text = reply.lower()
    named = [label for label, choice in zip(labels, choices, strict=True)
             if choice.strip() and re.search(rf"(?<!\w){re.escape(choice.strip().lower())}(?!\w)", text)]
    return named[0] if len(named) == 1 else ""


@contextlib.contextmanager
def mcq_label_fallback() -> Iterator[None]:
    from evalscope.api.benchmark.adapters.multi_choice_adapter import MultiChoiceAdapter

    original = MultiChoiceAdapter.extract_answer

    def extract_answer(self: Any, prediction: str, task_state: Any) -> str:
        answer = original(self, prediction, task_state)
        if answer or getattr(self, "multiple_correct", False):
            return answer
        return fallback_label(prediction or "", [str(choice.value) for choice in task_state.choices])

    MultiChoiceAdapter.extract_answer = extract_answer
    try:
        yield
    finally:
        MultiChoiceAdapter.extract_answer = original
