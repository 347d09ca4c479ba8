"""The template registry: `TEMPLATES` maps a template name to its `TemplateMeta`."""

from __future__ import annotations

import difflib
from typing import Any

from swift.core.errors import DuplicateNameError, UnknownTemplateError
from swift.core.template.meta import TemplateMeta

TEMPLATES: dict[str, TemplateMeta] = {}


def register_template(meta: TemplateMeta, *, replace: bool = False) -> None:
    """Add a template family; an existing name is refused unless `replace=True`."""
    if meta.name in TEMPLATES and not replace:
        raise DuplicateNameError(f"template {meta.name!r} exists; pass replace=True to override it")
    TEMPLATES[meta.name] = meta


def get_template_meta(name: str) -> TemplateMeta:
    if name not in TEMPLATES:
        hint = difflib.get_close_matches(name, TEMPLATES, n=3)
        raise UnknownTemplateError(f"--template {name!r} is unknown" + (f"; did you mean {hint}?" if hint else "")
                                   + "; leave --template unset to use the tokenizer's own chat template")
    return TEMPLATES[name]


def detect_template_meta(tokenizer: Any) -> TemplateMeta | None:
    """The registered family whose `detect` strings are in the tokenizer's chat template (and `detect_tokens` in
    its added tokens), or None. A tokenizer without a chat template matches no family."""
    chat_template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(chat_template, dict):  # named templates ("default", "tool_use", ...)
        chat_template = "\n".join(chat_template.values())
    if not chat_template:
        return None
    tokens = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    tokens |= {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    for meta in sorted(TEMPLATES.values(), key=lambda m: -m.priority):
        if meta.detect and all(s in chat_template for s in meta.detect) and all(t in tokens for t in meta.detect_tokens):
            return meta
    return None
