"""get_template: family detection, fallback templates for tokenizers without one, options, decode, import cost."""

from __future__ import annotations

import pytest

from swift.core.errors import ConfigError, UnknownTemplateError
from swift.core.template import IGNORE_INDEX, TEMPLATES, get_template
from tests.conftest import HEAVY, run_python
from tests.core.template.conftest import FAMILIES
from tests.core.template.conversations import CASES, assistant, user
from tests.core.template.test_encode import check_labels, reference_ids

EXPECTED = {"llama3": "llama3", "mistral": "mistral", "phi3": "phi3", "qwen2_5": "qwen2_5", "qwen3": "qwen3",
            "yi": "yi", "smollm2": "smollm2"}

# The DeepSeek-R1 distill template's shape: the reasoning of every answer is dropped and the generation prompt
# opens the think block, so no prefix of the conversation renders as a prefix of the whole.
R1_LIKE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<｜User｜>' + "
    "message['content'] }}{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


@pytest.fixture
def bare_tokenizer():
    """The Qwen2.5 tokenizer with its chat template removed, as base-model tokenizers come."""
    from transformers import AutoTokenizer

    from tests.conftest import FIXTURES

    tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "qwen2_5")
    tokenizer.chat_template = None
    return tokenizer


@pytest.mark.parametrize("family", [f for f in FAMILIES if f in EXPECTED])
def test_detects_the_family_of_every_fixture(family, tokenizer_of):
    template = get_template(None, tokenizer_of(family))
    assert template.name == EXPECTED[family]
    assert template.chat_template is None  # the tokenizer's own template stays the ground truth
    assert template.tokenizer.eos_token in template.stop_words


def test_unknown_chat_template_uses_the_tokenizer_template_as_is(bare_tokenizer):
    bare_tokenizer.chat_template = ("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}### assistant: {% endif %}")
    template = get_template(None, bare_tokenizer)
    assert template.name == "hf"
    messages = CASES["multi"][0]
    encoded = template.encode({"messages": messages})
    assert encoded["input_ids"] == reference_ids(bare_tokenizer, messages, None)
    chosen = [i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX]
    assert "".join(bare_tokenizer.decode(chosen).split()) == "Four.Six."  # " Four" and ".\n" straddle the spans


def test_tokenizer_without_chat_template_gets_chatml(bare_tokenizer):
    template = get_template(None, bare_tokenizer)
    assert template.name == "chatml"
    assert template.chat_template is not None
    for name in ("system_multi", "tools_then_chat", "reasoning_tools", "generation", "tools_two_calls"):
        messages, tools = CASES[name]
        encoded = template.encode({"messages": messages, "tools": tools})
        assert encoded["input_ids"] == reference_ids(bare_tokenizer, messages, tools,
                                                     chat_template=template.chat_template)
        check_labels(template, messages, encoded)
    text = bare_tokenizer.decode(template.encode({"messages": CASES["reasoning_tools"][0],
                                                  "tools": CASES["reasoning_tools"][1]})["input_ids"])
    assert "<think>\nThe tool said 18 C.\n</think>\n\nIt is 18 C." in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text


def test_a_named_family_brings_its_template_and_default_system(bare_tokenizer):
    template = get_template("internlm2", bare_tokenizer)
    text = bare_tokenizer.decode(template.encode({"messages": CASES["single"][0]})["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are an AI assistant whose name is InternLM")
    gemma = get_template("gemma", bare_tokenizer)
    messages = [user(" Hi "), assistant(" Hello! "), user("Bye"), assistant("Bye.")]
    encoded = gemma.encode({"messages": messages})
    assert bare_tokenizer.decode(encoded["input_ids"]).startswith("<start_of_turn>user\nHi<end_of_turn>\n")
    chosen = [i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX]
    # this vocabulary lacks <end_of_turn>, so ">\n" is one token at the end of each span: compare without spaces
    assert "".join(bare_tokenizer.decode(chosen).split()) == "Hello!<end_of_turn>Bye.<end_of_turn>"


def test_a_family_without_a_template_needs_one(bare_tokenizer):
    with pytest.raises(ConfigError, match="--template chatml"):
        get_template("llama3", bare_tokenizer)


def test_reasoning_dropped_by_the_template_and_a_think_generation_prompt(bare_tokenizer):
    bare_tokenizer.chat_template = R1_LIKE
    template = get_template(None, bare_tokenizer)
    assert template.name == "deepseek_r1"
    messages = [user("Is 15 even?"), assistant("<think>\n15 is odd.\n</think>\n\nNo."),
                user("Is 16 even?"), assistant("<think>\n16 = 2*8\n</think>\n\nYes.")]
    encoded = template.encode({"messages": messages})
    assert encoded["input_ids"] == reference_ids(bare_tokenizer, messages, None)
    chosen = [i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX]
    text = bare_tokenizer.decode(chosen)  # this vocabulary splits the R1 markers, so tokens straddle the spans
    assert "No.<｜end▁of▁sentence" in text
    assert "Yes.<｜end▁of▁sentence" in text
    assert "odd" not in text
    assert "2*8" not in text
    assert "Is 1" not in text
    assert template.parse_response("16 = 2*8\n</think>\n\nYes.<｜end▁of▁sentence｜>") == {
        "content": "Yes.", "reasoning_content": "16 = 2*8", "tool_calls": None}


def test_unknown_names_and_bad_options_fail_clearly(bare_tokenizer):
    with pytest.raises(UnknownTemplateError, match=r"did you mean \['qwen2_5'"):
        get_template("qwen25", bare_tokenizer)
    with pytest.raises(ConfigError, match=r"--truncation_strategy 'middle'.*--loss_scale 'some'.*--max_length 0"):
        get_template(None, bare_tokenizer, truncation_strategy="middle", loss_scale="some", max_length=0)


def test_decode_and_parse_response(tokenizer_of):
    tokenizer = tokenizer_of("qwen3")
    template = get_template(None, tokenizer)
    ids = tokenizer.encode("<think>\nhmm\n</think>\n\nHello<|im_end|>", add_special_tokens=False)
    assert template.decode(ids, skip_special_tokens=False).endswith("Hello<|im_end|>")
    assert template.parse_response(template.decode(ids)) == {
        "content": "Hello", "reasoning_content": "hmm", "tool_calls": None}


def test_every_registered_template_is_complete():
    must_have = {"chatml", "qwen2_5", "qwen3", "llama3", "mistral", "phi3", "yi", "smollm2", "gemma", "glm4",
                 "internlm2", "deepseek_r1", "hf"}
    assert must_have <= set(TEMPLATES)
    for name, meta in TEMPLATES.items():
        assert meta.name == name
        assert name == "hf" or (meta.detect and meta.stop_words), name


def test_import_loads_neither_torch_nor_transformers():
    code = ("import sys, swift.core.template as t; t.get_template_meta('qwen3'); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_naming_another_family_renders_with_its_template(tokenizer_of):
    tokenizer = tokenizer_of("llama3")
    chatml = get_template("chatml", tokenizer)
    text = tokenizer.decode(chatml.encode({"messages": CASES["single"][0]})["input_ids"])
    assert text.startswith("<|im_start|>user\nGive me a synonym")
    assert get_template("llama3", tokenizer).chat_template is None  # its own family: the tokenizer's template
    assert get_template("hf", tokenizer).chat_template is None


def test_a_template_pickles_for_dataset_workers(tokenizer_of):
    import pickle

    template = get_template(None, tokenizer_of("qwen3"), enable_thinking=False, loss_scale="last_round")
    clone = pickle.loads(pickle.dumps(template))
    row = {"messages": CASES["reasoning_multi"][0]}
    assert clone.encode(row) == template.encode(row)
    assert clone.name == "qwen3"
    assert clone.options == template.options
