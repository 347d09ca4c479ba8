"""encode: token parity with apply_chat_template on every fixture tokenizer, loss only on the assistant's side."""

from __future__ import annotations

import random
import re

import pytest

from swift.core.template import IGNORE_INDEX, RowTooLongError, TemplateError, get_template
from swift.core.template.encode import _tokenize_by_segments, tokenize_with_labels
from tests.core.template.conftest import FAMILIES
from tests.core.template.conversations import CASES, WEATHER, assistant, call, random_conversation, tool, user

# Tokens that open a turn or a conversation: never something the assistant is trained to say.
HEADERS = {"<|im_start|>", "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>", "[INST]", "[/INST]",
           "<s>", "<|startoftext|>", "<|assistant|>", "<|user|>", "<|system|>", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]"}


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def reference_ids(tokenizer, messages, tools, **kwargs) -> list[int] | None:
    """What the tokenizer's own chat template gives, or None when it refuses the conversation."""
    add_generation_prompt = messages[-1]["role"] != "assistant"
    try:
        ids = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False,
                                            add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception:  # noqa: BLE001  (jinja raise_exception and friends: the template refuses this conversation)
        return None
    return list(ids)


def supervised(tokenizer, encoded: dict) -> list[int]:
    return [i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX]


def check_labels(template, messages, encoded, *, last_only: bool = False) -> None:
    tokenizer = template.tokenizer
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(labels) == len(ids)
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels, strict=True))
    if messages[-1]["role"] != "assistant":
        assert set(labels) == {IGNORE_INDEX}
        return
    chosen = supervised(tokenizer, encoded)
    text = squash(tokenizer.decode(chosen))
    rendered = squash(tokenizer.decode(ids))
    assert squash(messages[-1]["content"] or "") in text, "the last answer carries the loss"
    for message in messages:
        content = squash(message.get("content") or "")
        if message["role"] in ("user", "system", "tool") and len(content) > 3:
            assert content not in text, f"{message['role']} text {content!r} carries loss"
        if message["role"] == "assistant" and content and content in rendered:
            assert (content in text) != (last_only and message is not messages[-1])
    assert not HEADERS & {tokenizer.decode([i]) for i in chosen}, "a turn header carries loss"
    assert tokenizer.decode([chosen[-1]]) in template.stop_words, "the answer ends with its end-of-turn token"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_encode_is_token_exact_and_masks_all_but_the_answers(family, case, tokenizer_of):
    tokenizer = tokenizer_of(family)
    messages, tools = CASES[case]
    template = get_template(None, tokenizer)
    reference = reference_ids(tokenizer, messages, tools)
    if reference is None:
        with pytest.raises(TemplateError, match="refuses"):
            template.encode({"messages": messages, "tools": tools})
        pytest.skip(f"{family}'s own chat template refuses {case}")
    encoded = template.encode({"messages": messages, "tools": tools})
    assert encoded["input_ids"] == reference
    check_labels(template, messages, encoded)


@pytest.mark.parametrize("family", FAMILIES)
def test_last_round_and_all_loss_scales(family, tokenizer_of):
    tokenizer = tokenizer_of(family)
    messages = CASES["system_multi"][0]
    last = get_template(None, tokenizer, loss_scale="last_round").encode({"messages": messages})
    check_labels(get_template(None, tokenizer), messages, last, last_only=True)
    everything = get_template(None, tokenizer, loss_scale="all").encode({"messages": messages})
    assert everything["labels"] == everything["input_ids"] == last["input_ids"]


@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("case", ["single", "reasoning", "reasoning_multi", "tools", "generation"])
def test_qwen3_thinking_switch_reaches_the_chat_template(case, enable_thinking, tokenizer_of):
    tokenizer = tokenizer_of("qwen3")
    messages, tools = CASES[case]
    template = get_template(None, tokenizer, enable_thinking=enable_thinking)
    assert template.name == "qwen3"
    encoded = template.encode({"messages": messages, "tools": tools})
    assert encoded["input_ids"] == reference_ids(tokenizer, messages, tools, enable_thinking=enable_thinking)
    if case == "generation":
        prompt = tokenizer.decode(encoded["input_ids"])
        assert prompt.endswith("<think>\n\n</think>\n\n") != enable_thinking
    if case != "reasoning" or enable_thinking:  # thinking off yet reasoning given: the think block is the answer's
        check_labels(template, messages, encoded)


def test_qwen3_keeps_reasoning_only_where_the_template_renders_it(tokenizer_of):
    tokenizer = tokenizer_of("qwen3")
    messages = CASES["reasoning_multi"][0]
    text = tokenizer.decode(supervised(tokenizer, get_template(None, tokenizer).encode({"messages": messages})))
    assert "16 = 2*8." in text
    assert "15 = 2*7" not in text
    assert text.startswith("No, it is odd.<|im_end|>")


def test_mistral_fills_missing_tool_call_ids(tokenizer_of):
    tokenizer = tokenizer_of("mistral")
    messages = [user("Weather in Paris?"),
                assistant("", tool_calls=[{"type": "function", "function": {"name": "get_weather",
                                                                           "arguments": {"city": "Paris"}}}]),
                {"role": "tool", "content": "18 C"}, assistant("18 C in Paris.")]
    assert reference_ids(tokenizer, messages, [WEATHER]) is None  # the template itself demands 9-character ids
    template = get_template(None, tokenizer)
    encoded = template.encode({"messages": messages, "tools": [WEATHER]})
    text = tokenizer.decode(encoded["input_ids"])
    call_id = re.search(r'"id": "(\w{9})"', text).group(1)
    assert f'"call_id": "{call_id}"' in text
    check_labels(template, messages, encoded)


def test_mistral_moves_the_system_prompt_and_labels_still_follow(tokenizer_of):
    tokenizer = tokenizer_of("mistral")
    messages = CASES["system_multi"][0][:-1]  # ends with the user asking "And 4+4?"
    prompt = get_template(None, tokenizer).encode({"messages": messages})["input_ids"]
    assert "Answer in words.\n\nAnd 4+4?" in tokenizer.decode(prompt)  # the system prompt joins the last user turn


def test_truncation_strategies(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    row = {"messages": CASES["multi"][0]}
    full = get_template(None, tokenizer).encode(row)
    n = len(full["input_ids"]) - 5
    with pytest.raises(RowTooLongError, match=f"over --max_length {n}"):
        get_template(None, tokenizer, max_length=n).encode(row)
    left = get_template(None, tokenizer, max_length=n, truncation_strategy="left").encode(row)
    right = get_template(None, tokenizer, max_length=n, truncation_strategy="right").encode(row)
    assert left["input_ids"] == full["input_ids"][-n:]
    assert left["labels"] == full["labels"][-n:]
    assert right["input_ids"] == full["input_ids"][:n]
    assert right["labels"] == full["labels"][:n]
    assert get_template(None, tokenizer, max_length=len(full["input_ids"])).encode(row) == full


def test_preference_rows_encode_both_sides(tokenizer_of):
    tokenizer = tokenizer_of("llama3")
    template = get_template(None, tokenizer)
    prompt = [user("Write a haiku about rain.")]
    chosen = "Soft rain taps the roof."
    row = {"messages": [*prompt, assistant(chosen)], "rejected_response": "rain"}
    out = template.encode(row)
    assert out["chosen_input_ids"] == template.encode({"messages": [*prompt, assistant(chosen)]})["input_ids"]
    assert out["rejected_input_ids"] == reference_ids(tokenizer, [*prompt, assistant("rain")], None)
    assert tokenizer.decode(supervised(tokenizer, {"input_ids": out["rejected_input_ids"],
                                                   "labels": out["rejected_labels"]})) == "rain<|eot_id|>"
    trl_style = template.encode({"prompt": prompt, "chosen": [assistant(chosen)], "rejected": "rain"})
    assert trl_style == out


def test_kto_rows_keep_their_label(tokenizer_of):
    template = get_template(None, tokenizer_of("qwen2_5"))
    row = {"messages": [user("Say hello politely."), assistant("hey")], "label": False}
    out = template.encode(row)
    assert out["label"] is False
    assert out["input_ids"] == template.encode({"messages": row["messages"]})["input_ids"]


def test_default_system_is_inserted_when_missing(tokenizer_of):
    tokenizer = tokenizer_of("llama3")
    template = get_template(None, tokenizer, default_system="You speak like a pirate.")
    text = tokenizer.decode(template.encode({"messages": CASES["single"][0]})["input_ids"])
    assert "You speak like a pirate." in text
    own = tokenizer.decode(template.encode({"messages": CASES["system_single"][0]})["input_ids"])
    assert "pirate" not in own
    assert "You are terse." in own


@pytest.mark.parametrize("row", [{}, {"messages": []}, {"messages": "hi"}, {"messages": [{"content": "x"}]},
                                 {"messages": [user("hi")], "tools": "{not json"}])
def test_bad_rows_raise_template_errors(row, tokenizer_of):
    with pytest.raises(TemplateError):
        get_template(None, tokenizer_of("qwen2_5")).encode(row)


def test_tool_call_answers_parse_back(tokenizer_of):
    for family in ("qwen2_5", "qwen3", "llama3", "mistral"):
        tokenizer = tokenizer_of(family)
        template = get_template(None, tokenizer)
        messages = [user("Weather in Paris?"), assistant("", tool_calls=[call("get_weather", {"city": "Paris"},
                                                                            "call00001")]), tool("18 C")]
        encoded = template.encode({"messages": [*messages, assistant("ok")], "tools": [WEATHER]})
        first_turn = []
        for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True):
            if label == IGNORE_INDEX and first_turn:
                break
            if label != IGNORE_INDEX:
                first_turn.append(i)
        parsed = template.parse_response(tokenizer.decode(first_turn))
        assert parsed["tool_calls"][0]["function"]["name"] == "get_weather", family
        assert parsed["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}', family


@pytest.mark.parametrize("family", ["qwen2_5", "yi", "phi3"])
def test_labels_without_offsets_match_labels_from_offsets(family, tokenizer_of):
    """Tokenizers without offset mappings: pieces between span boundaries are tokenized and aligned to the whole."""
    tokenizer = tokenizer_of(family)
    template = get_template(None, tokenizer)
    for name in ("system_multi", "unicode", "code"):
        messages = CASES[name][0]
        encoded = template.encode({"messages": messages})
        text = template.render(messages)
        spans = [(text.index(m["content"].strip()), text.index(m["content"].strip()) + len(m["content"].strip()))
                 for m in messages if m["role"] == "assistant"]
        ids, labels = tokenize_with_labels(tokenizer, text, spans)
        fallback_ids, fallback_labels = _tokenize_by_segments(tokenizer, text, spans)
        assert fallback_ids == ids == encoded["input_ids"]
        assert tokenizer.decode([i for i, label in zip(ids, fallback_labels, strict=True) if label != IGNORE_INDEX]) \
            .split() == tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]).split()


def test_warns_once_when_the_template_drops_tool_calls_or_reasoning(tokenizer_of, caplog):
    template = get_template(None, tokenizer_of("phi3"))
    for _ in range(2):
        template.encode({"messages": CASES["tools"][0], "tools": CASES["tools"][1]})
    assert [r.getMessage() for r in caplog.records].count(
        "the chat template (phi3) does not render the assistant's tool calls of some rows: they carry no loss; "
        "use a template that renders them") == 1
    caplog.clear()
    get_template(None, tokenizer_of("qwen2_5")).encode({"messages": CASES["reasoning"][0]})
    assert "reasoning_content" in caplog.text
    caplog.clear()
    get_template(None, tokenizer_of("qwen3")).encode({"messages": CASES["reasoning_tools"][0],
                                                       "tools": CASES["reasoning_tools"][1]})
    assert not caplog.records


@pytest.mark.parametrize(("family", "enable_thinking"),
                         [(f, None) for f in FAMILIES] + [(f, False) for f in FAMILIES if f == "qwen3"])
def test_random_conversations(family, enable_thinking, tokenizer_of):
    """Tagged random conversations: exact ids; every rendered answer tag in the loss, no prompt tag in it."""
    tokenizer = tokenizer_of(family)
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    template = get_template(None, tokenizer, **kwargs)
    rng = random.Random(f"{family}-{enable_thinking}")
    checked = 0
    for number in range(40):
        messages, tools = random_conversation(rng, number)
        reference = reference_ids(tokenizer, messages, tools, **kwargs)
        if reference is None:
            continue
        encoded = template.encode({"messages": messages, "tools": tools})
        assert encoded["input_ids"] == reference, messages
        checked += 1
        if messages[-1]["role"] != "assistant":
            continue
        trained = tokenizer.decode(supervised(tokenizer, encoded))
        rendered = tokenizer.decode(encoded["input_ids"])
        assert not re.findall(r"#[sut][\d.]+#", trained), messages
        assert all(tag in trained for tag in re.findall(r"#a[\d.]+#", rendered)), messages
    assert checked >= 30


def test_a_conversation_opening_with_the_assistant_needs_loss_scale_all(tokenizer_of):
    """Pretraining text arrives as one assistant message: every token carries loss; SFT refuses to guess."""
    tokenizer = tokenizer_of("llama3")
    row = {"messages": [assistant("Plain pretraining text.")]}
    encoded = get_template(None, tokenizer, loss_scale="all").encode(row)
    assert encoded["labels"] == encoded["input_ids"] == reference_ids(tokenizer, row["messages"], None)
    with pytest.raises(TemplateError, match="opens with an assistant message"):
        get_template(None, tokenizer).encode(row)
