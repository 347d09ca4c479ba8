"""find_assistant_spans: each strategy, driven by small renderers that have the quirks real templates have."""

from __future__ import annotations

import re

import pytest

from swift.core.template.errors import TemplateError
from swift.core.template.spans import _align_tail, _common_prefix, find_assistant_spans

SPECIAL = re.compile(r"<eot>|<eos>|<bos>")
CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]


def texts(spans, text):
    return [text[start:end] for _, start, end in spans]


def plain(messages, add_generation_prompt, eos=""):
    out = "<bos>" + "".join(f"[{m['role']}]{m['content']}<eot>\n" for m in messages)
    return out + ("[assistant]" if add_generation_prompt else eos)


def test_consistent_prefixes_give_exact_spans():
    text = plain(CHAT, False)
    spans = find_assistant_spans(CHAT, text, plain, SPECIAL)
    assert [i for i, _, _ in spans] == [2, 4]
    assert texts(spans, text) == ["a1<eot>", "a2<eot>"]  # the newline after <eot> belongs to the next header


def test_system_moved_into_the_last_user_turn():
    """Mistral: the system prompt rides in the last user turn, so prompts are not prefixes of the whole."""
    def render(messages, add_generation_prompt):
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        rest = messages[1:] if system is not None else messages
        last_user = max((k for k, m in enumerate(rest) if m["role"] == "user"), default=-1)
        out = "<bos>"
        for k, m in enumerate(rest):
            if m["role"] == "user":
                out += "[INST]" + (system + "\n\n" if k == last_user and system else "") + m["content"] + "[/INST]"
            else:
                out += m["content"] + "<eos>"
        return out

    text = render(CHAT, False)
    assert text == "<bos>[INST]u1[/INST]a1<eos>[INST]S\n\nu2[/INST]a2<eos>"
    assert texts(find_assistant_spans(CHAT, text, render, SPECIAL), text) == ["a1<eos>", "a2<eos>"]


def test_a_trailer_added_only_at_the_end_of_a_conversation():
    """Phi-3: EOS follows the last turn only, so a prefix ending with an answer has it and the whole does not."""
    def render(messages, add_generation_prompt):
        return plain(messages, add_generation_prompt, eos="<eos>")

    text = render(CHAT, False)
    assert texts(find_assistant_spans(CHAT, text, render, SPECIAL), text) == ["a1<eot>", "a2<eot>\n<eos>"]


def test_reasoning_dropped_from_earlier_turns():
    """Qwen3: an answer before the last user turn loses its think block."""
    def render(messages, add_generation_prompt):
        last_user = max(k for k, m in enumerate(messages) if m["role"] == "user")
        out = ""
        for k, m in enumerate(messages):
            think = f"<think>{m.get('reasoning_content', '')}</think>" if k > last_user else ""
            out += f"[{m['role']}]" + (think if m["role"] == "assistant" else "") + m["content"] + "<eot>"
        return out + ("[assistant]" if add_generation_prompt else "")

    chat = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
            {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2", "reasoning_content": "r2"}]
    text = render(chat, False)
    assert texts(find_assistant_spans(chat, text, render, SPECIAL), text) == ["a1<eot>", "<think>r2</think>a2<eot>"]


def test_a_generation_prompt_that_opens_a_block_earlier_turns_lack():
    """Qwen3 with thinking off: the prompt ends in an empty think block that the answers in the history lack."""
    def render(messages, add_generation_prompt):
        out = "".join(f"[{m['role']}]{m['content']}<eot>" for m in messages)
        return out + ("[assistant]<think></think>" if add_generation_prompt else "")

    text = render(CHAT, False)
    assert texts(find_assistant_spans(CHAT, text, render, SPECIAL), text) == ["a1<eot>", "a2<eot>"]


def test_refused_prefixes_fall_back_and_inconsistent_answers_raise():
    def shouting(messages, add_generation_prompt):  # answers before the last one are rendered in capitals
        out = "".join(f"[{m['role']}]" + (m["content"].upper() if k < len(messages) - 1 else m["content"]) + "<eot>"
                      for k, m in enumerate(messages))
        return out + ("[assistant]" if add_generation_prompt else "")

    text = shouting(CHAT, False)
    with pytest.raises(TemplateError, match="assistant message 2 ends"):
        find_assistant_spans(CHAT, text, shouting, SPECIAL)

    def refuses_prefixes(messages, add_generation_prompt):
        return plain(messages, add_generation_prompt) if len(messages) == len(CHAT) else None

    with pytest.raises(TemplateError, match="refuses the conversation before assistant message 2"):
        find_assistant_spans(CHAT, plain(CHAT, False), refuses_prefixes, SPECIAL)


def test_string_helpers():
    assert _common_prefix("abcdef", "abcxef") == 3
    assert _common_prefix("abc", "abcdef") == 3
    assert _common_prefix("", "x") == 0
    # the longest tail of the prompt found after position 4, and where it ends
    assert _align_tail("zz[INST]u2[/INST]", "[INST]u1[/INST]x[INST]u2[/INST]y", 4) == len("[INST]u1[/INST]x[INST]u2[/INST]")
    assert _align_tail("abc", "xyz", 0) is None


def test_a_conversation_opening_with_the_assistant_is_refused():
    chat = [{"role": "assistant", "content": "a0"}, *CHAT[1:]]
    with pytest.raises(TemplateError, match="opens with an assistant message"):
        find_assistant_spans(chat, plain(chat, False), plain, SPECIAL)
