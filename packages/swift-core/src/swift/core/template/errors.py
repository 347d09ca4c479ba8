"""Errors raised while encoding rows with a template (subclasses of `swift.core.errors.SwiftError`)."""

from __future__ import annotations

from swift.core.errors import SwiftError


class TemplateError(SwiftError, ValueError):
    """A conversation the chat template refuses, or whose assistant turns cannot be located in the rendered text."""


class RowTooLongError(TemplateError):
    """A row longer than `max_length` under `truncation_strategy="delete"`: the caller drops the row."""

    def __init__(self, length: int, max_length: int) -> None:
        self.length, self.max_length = length, max_length
        super().__init__(f"row has {length} tokens, over --max_length {max_length}; it is dropped under "
                         "--truncation_strategy delete (use left or right to cut it instead)")
