"""The template registry: duplicates refused, unknown names answered with suggestions, detection by template text."""

from __future__ import annotations

import copy

import pytest

from swift.core.errors import DuplicateNameError, UnknownTemplateError
from swift.core.template import TEMPLATES, TemplateMeta, detect_template_meta, get_template_meta, register_template


def test_duplicates_are_refused_unless_replaced(monkeypatch):
    monkeypatch.setattr("swift.core.template.registry.TEMPLATES", dict(TEMPLATES))
    from swift.core.template import registry

    with pytest.raises(DuplicateNameError, match="'chatml' exists"):
        register_template(TemplateMeta(name="chatml"))
    register_template(TemplateMeta(name="chatml", stop_words=("<x>",)), replace=True)
    assert registry.get_template_meta("chatml").stop_words == ("<x>",)
    register_template(TemplateMeta(name="my_family", detect=("<my_turn>",), priority=99))
    assert registry.get_template_meta("my_family").priority == 99
    assert TEMPLATES["chatml"].stop_words == ("<|im_end|>",)  # the real registry is untouched


def test_unknown_names_get_suggestions():
    with pytest.raises(UnknownTemplateError, match=r"'lama3' is unknown; did you mean \['llama3'\]"):
        get_template_meta("lama3")
    with pytest.raises(UnknownTemplateError, match="leave --template unset"):
        get_template_meta("zzzzzz")


@pytest.fixture(scope="module")
def phi3_tokenizer():
    from transformers import AutoTokenizer

    from tests.conftest import FIXTURES

    return AutoTokenizer.from_pretrained(FIXTURES / "phi3")


@pytest.mark.parametrize(("chat_template", "tokens", "expected"), [
    ("<|im_start|>{{ m.content }}<|im_end|>", (), "chatml"),
    ("<|im_start|>{{ m.content }}<|im_end|>", ("<|startoftext|>",), "yi"),
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM", (), "smollm2"),
    ("<|im_start|> <tool_call> <think>", (), "qwen3"),
    ("<|im_start|> <tool_call>", (), "qwen2_5"),
    ("<｜User｜>{{c}}<｜Assistant｜><think>", (), "deepseek_r1"),
    ("<|start_header_id|>", (), "llama3"),
    ("[INST]{{c}}[/INST]", (), "mistral"),
    ("<|user|>\n{{c}}<|end|>\n<|assistant|>", (), "phi3"),
    ("[gMASK]<sop><|user|>\n{{c}}<|assistant|>", (), "glm4"),
    ("<start_of_turn>user", (), "gemma"),
    ("{{ bos_token }}<|im_start|>", ("<|action_start|>",), "internlm2"),
    ("### {{ m.content }}", ("<|im_start|>",), None),
    (None, ("<|im_start|>",), None),
    ({"default": "[INST]", "tool_use": "[INST][AVAILABLE_TOOLS]"}, (), "mistral"),
])
def test_detection_reads_the_chat_template(chat_template, tokens, expected, phi3_tokenizer):
    """A real tokenizer given each family's template text (and special tokens, for the families that need them)."""
    tokenizer = phi3_tokenizer
    if tokens:
        tokenizer = copy.deepcopy(phi3_tokenizer)
        tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)})
    own, tokenizer.chat_template = tokenizer.chat_template, chat_template
    try:
        meta = detect_template_meta(tokenizer)
    finally:
        tokenizer.chat_template = own
    assert (meta.name if meta else None) == expected
