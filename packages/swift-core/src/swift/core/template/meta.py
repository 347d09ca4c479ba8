"""`TemplateMeta`: what Swift adds to a model family's own chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResponseFormat = Literal["plain", "hermes", "llama3_json", "mistral", "deepseek", "glm4", "internlm2", "react", "qwen"]


@dataclass(frozen=True)
class TemplateMeta:
    """A chat-template family: how to recognise it and what its chat template lacks.

    The tokenizer's own `chat_template` stays the ground truth for the text; a meta adds stop words, how answers
    are parsed back into content / reasoning / tool calls, and a fallback template for tokenizers that ship none.

    `detect`: substrings that must all occur in the tokenizer's chat template, and `detect_tokens` tokens that
    must all be in its vocabulary as added tokens, for `get_template(None, tokenizer)` to pick this family; metas
    are tried by descending `priority`.
    `chat_template`: jinja used only when the tokenizer has no chat template of its own.
    `default_system`: the family's usual system prompt. Official chat templates insert it themselves, so Swift
    inserts it only when it renders with `chat_template` (the tokenizer had none).
    `tool_call_id_length`: the template demands tool-call ids of this length (Mistral: 9); missing ids are filled.
    `non_thinking_prefix`: what a hybrid-thinking family's answers without reasoning start with (Qwen3's empty
    `<think>` block), added by `--add_non_thinking_prefix` where the chat template does not write it itself.
    """

    name: str
    detect: tuple[str, ...] = ()
    detect_tokens: tuple[str, ...] = ()
    priority: int = 0
    chat_template: str | None = None
    default_system: str | None = None
    stop_words: tuple[str, ...] = ()
    has_thinking: bool = False
    response_format: ResponseFormat = "plain"
    tool_call_id_length: int | None = None
    non_thinking_prefix: str = ""
    description: str = ""
