"""Token ids -> text as they are generated, with stop strings.

Decoding one token at a time breaks multi-byte characters and words whose spacing depends on the previous token;
like vLLM, we decode a short window before the new tokens and keep what it adds, and hold back text that ends in
an incomplete character. Text that could be the start of a stop string is held back too, so a stream never shows
what the final answer cuts off.
"""

from __future__ import annotations

from typing import Any


class Detokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prompt_ids[-6:])  # context, so the first answer token decodes with its spacing
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""
        self.sent = 0  # characters of `text` already handed out
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def add(self, token_id: int) -> bool:
        """Append a generated token; True when a stop string ended the answer (the text is cut before it)."""
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=False)
        full = self.tokenizer.decode(self.ids[self.prefix_offset:], skip_special_tokens=False)
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return False  # an incomplete character: wait for the next token
        new = full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        start = max(0, len(self.text) - self._hold)
        self.text += new
        hits = [at for at in (self.text.find(word, start) for word in self.stop) if at >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            return True
        return False

    def take(self, *, final: bool) -> str:
        """Text not handed out yet; until `final`, without a tail that may still turn into a stop string."""
        end = len(self.text) if final or not self._hold else max(self.sent, len(self.text) - self._hold)
        out = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return out
