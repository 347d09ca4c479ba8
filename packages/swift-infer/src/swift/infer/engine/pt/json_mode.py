"""`response_format={"type": "json_object"}` for the PyTorch engine: a character-level JSON automaton that says
whether a token may come next, so the answer is one JSON object (and ends right after it).

The sampler proposes a token; if the automaton refuses it, the most likely token it accepts is taken instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER_PREFIX = re.compile(r"-?(0|[1-9]\d*)?(\.\d*)?([eE][+-]?\d*)?")
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
_LITERALS = ("true", "false", "null")
_MAX_BLANKS = 16  # whitespace run outside strings: enough for pretty-printing, not for a model stuck on newlines


@dataclass
class JsonState:
    """Where a JSON object prefix stands. `feed` returns False (and leaves the state unusable) on invalid text."""

    stack: list[str] = field(default_factory=list)  # open containers: "{" or "["
    mode: str = "start"  # start, value, key_or_end, key, colon, after, string, escape, unicode, number, literal, done
    is_key: bool = False
    partial: str = ""  # the number or literal being read; hex digits left of a \u escape
    blanks: int = 0

    def copy(self) -> JsonState:
        return JsonState(list(self.stack), self.mode, self.is_key, self.partial, self.blanks)

    @property
    def done(self) -> bool:
        return self.mode == "done"

    def feed(self, text: str) -> bool:
        return all(self._char(c) for c in text)

    def _char(self, c: str) -> bool:
        mode = self.mode
        if mode == "string":
            return self._string_char(c)
        if mode == "escape":
            if c == "u":
                self.mode, self.partial = "unicode", ""
                return True
            self.mode = "string"
            return c in '"\\/bfnrt'
        if mode == "unicode":
            self.partial += c
            if len(self.partial) == 4:
                self.mode = "string"
            return c in "0123456789abcdefABCDEF"
        if mode == "number":
            if _NUMBER_PREFIX.fullmatch(self.partial + c):
                self.partial += c
                return True
            if not _NUMBER.fullmatch(self.partial):
                return False
            self._value_done()
            return self._char(c)
        if mode == "literal":
            self.partial += c
            if not any(word.startswith(self.partial) for word in _LITERALS):
                return False
            if self.partial in _LITERALS:
                self._value_done()
            return True
        if c in " \t\n\r":
            self.blanks += 1
            return mode != "done" and self.blanks <= _MAX_BLANKS
        self.blanks = 0
        return self._structural(c)

    def _string_char(self, c: str) -> bool:
        if c == '"':
            if self.is_key:
                self.mode = "colon"
            else:
                self._value_done()
            return True
        if c == "\\":
            self.mode = "escape"
            return True
        return c >= " "  # raw control characters are not allowed in JSON strings

    def _structural(self, c: str) -> bool:
        mode = self.mode
        if mode == "start":
            if c != "{":
                return False
            self.stack.append("{")
            self.mode = "key_or_end"
            return True
        if mode in ("key_or_end", "key"):
            if c == "}" and mode == "key_or_end":
                return self._close("{")
            if c != '"':
                return False
            self.mode, self.is_key = "string", True
            return True
        if mode == "colon":
            if c != ":":
                return False
            self.mode = "value"
            return True
        if mode == "value" or (mode == "value_or_end" and c != "]"):
            return self._value_start(c)
        if mode == "value_or_end":
            return self._close("[")
        if mode == "after":
            if c == ",":
                self.mode = "key" if self.stack[-1] == "{" else "value"
                return True
            if c in "}]":
                return self._close("{" if c == "}" else "[")
        return False

    def _value_start(self, c: str) -> bool:
        if c == '"':
            self.mode, self.is_key = "string", False
        elif c in "{[":
            self.stack.append(c)
            self.mode = "key_or_end" if c == "{" else "value_or_end"
        elif c == "-" or c.isdigit():
            self.mode, self.partial = "number", c
        elif c in "tfn":
            self.mode, self.partial = "literal", c
        else:
            return False
        return True

    def _close(self, opener: str) -> bool:
        if not self.stack or self.stack[-1] != opener:
            return False
        self.stack.pop()
        self._value_done()
        return True

    def _value_done(self) -> None:
        self.partial = ""
        self.mode = "after" if self.stack else "done"
