"""--agent_template and the template flags (--use_chat_template, --response_prefix, --add_non_thinking_prefix), by
their effect on the encoded tokens and labels of real tokenizers; the parser reads each format back."""

from __future__ import annotations

import dataclasses
import json

import pytest

from swift.core import TemplateArgs, build_template
from swift.core.errors import ConfigError
from swift.core.template import IGNORE_INDEX, Template, TemplateOptions, get_template, get_template_meta
from swift.core.template.agent import AGENT_TEMPLATES
from tests.core.template.conversations import WEATHER, assistant, call, system, tool, user

CALL_ROW = {"tools": [WEATHER], "messages": [
    user("Weather in Paris?"),
    assistant("", tool_calls=[call("get_weather", {"city": "Paris"}, "call00001")]),
    tool("18 C, sunny"),
    assistant("It is 18 C and sunny in Paris.")]}
# the same conversation as ms-swift writes it: tool_call / tool_response roles with JSON content
MS_SWIFT_ROW = {"tools": json.dumps([WEATHER]), "messages": [
    user("Weather in Paris?"),
    {"role": "tool_call", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
    {"role": "tool_response", "content": "18 C, sunny"},
    assistant("It is 18 C and sunny in Paris.")]}


def reference(tokenizer, row: dict) -> list[int]:
    return list(tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=True, return_dict=False))


def trained(template, encoded: dict) -> str:
    return template.decode([i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                            if label != IGNORE_INDEX])


def first_turn(template, encoded: dict) -> str:
    """The text of the first trained run of tokens (the assistant's tool-call turn)."""
    run, started = [], False
    for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True):
        if label != IGNORE_INDEX:
            run.append(token)
            started = True
        elif started:
            break
    return template.decode(run)


@pytest.mark.parametrize(("family", "name"), [("qwen2_5", "hermes"), ("qwen3", "hermes"), ("llama3", "llama3"),
                                              ("mistral", "mistral")])
def test_a_familys_own_format_gives_its_chat_templates_tokens(family, name, tokenizer_of):
    """--agent_template <the model's format>: token for token what its tokenizer renders with tools=..., the call
    is trained, and the parser reads it back as the row's call."""
    tokenizer = tokenizer_of(family)
    template = get_template(None, tokenizer, agent_template=name)
    encoded = template.encode(CALL_ROW)
    assert encoded["input_ids"] == reference(tokenizer, CALL_ROW)
    if family != "mistral":  # there the ms-swift row's call gets a generated id, not call00001
        assert template.encode(MS_SWIFT_ROW)["input_ids"] == encoded["input_ids"]
    parsed = template.parse_response(first_turn(template, encoded))
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed["tool_calls"]] == [
        ("get_weather", {"city": "Paris"})]
    assert "18 C, sunny" not in trained(template, encoded)


@pytest.mark.parametrize("family", ["qwen2_5", "qwen3"])
def test_hermes_written_as_text_is_token_identical_to_qwens_own_tool_rendering(family, tokenizer_of):
    """A family without Hermes tools gets them written into plain messages; on Qwen's tokenizer that text must be
    exactly what Qwen's chat template renders from tools=... (so the written format is the real one)."""
    tokenizer = tokenizer_of(family)
    meta = dataclasses.replace(get_template_meta(family), response_format="plain")  # not hermes: text is written
    template = Template(meta, tokenizer, TemplateOptions(agent_template="hermes"))
    assert template.agent is not None
    for row in (CALL_ROW, {**CALL_ROW, "messages": [system("Be brief."), *CALL_ROW["messages"]]}):
        encoded = template.encode(row)
        assert encoded["input_ids"] == reference(tokenizer, row)
        assert encoded["labels"] == get_template(None, tokenizer).encode(row)["labels"]


@pytest.mark.parametrize(("family", "name"), [("qwen2_5", "hermes"), ("llama3", "llama3"), ("mistral", "mistral")])
def test_the_written_tool_list_is_the_one_the_familys_template_writes(family, name, tokenizer_of):
    tokenizer = tokenizer_of(family)
    tools = [WEATHER, {"type": "function", "function": {"name": "now", "description": "The time.", "parameters": {}}}]
    native = tokenizer.apply_chat_template([user("Weather in Paris?")], tools=tools, tokenize=False)
    system_prompt = get_template_meta(family).default_system
    assert AGENT_TEMPLATES[name].format_tools(tools, system_prompt) in native


@pytest.mark.parametrize("name", sorted(AGENT_TEMPLATES))
def test_every_format_trains_its_calls_not_the_results_and_parses_back(name, smollm2_tokenizer):
    """SmolLM2's chat template knows no tools: each format is written as text, in the order ms-swift writes it."""
    template = get_template(None, smollm2_tokenizer, agent_template=name)
    assert template.agent is not None
    assert template.response_format == AGENT_TEMPLATES[name].response_format
    encoded = template.encode(MS_SWIFT_ROW)
    text, learned = template.decode(encoded["input_ids"]), trained(template, encoded)
    assert "get_weather" in text.split("Weather in Paris?")[0]  # the tool list comes before the question
    assert "18 C, sunny" in text
    assert "18 C, sunny" not in learned
    assert learned.rstrip().endswith("It is 18 C and sunny in Paris.<|im_end|>")
    parsed = template.parse_response(first_turn(template, encoded))
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed["tool_calls"]] == [
        ("get_weather", {"city": "Paris"})]


def test_react_puts_the_observation_in_the_assistants_turn_without_loss(smollm2_tokenizer):
    template = get_template(None, smollm2_tokenizer, agent_template="react_en")
    encoded = template.encode(MS_SWIFT_ROW)
    text = template.decode(encoded["input_ids"])
    assert ('<|im_start|>assistant\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation:18 C, sunny\n'
            'It is 18 C and sunny in Paris.<|im_end|>') in text
    assert trained(template, encoded) == ('Action: get_weather\nAction Input: {"city": "Paris"}\nObservation:'
                                          'It is 18 C and sunny in Paris.<|im_end|>')
    weighted = get_template(None, smollm2_tokenizer, agent_template="react_en", loss_scale="react").encode(
        MS_SWIFT_ROW)
    doubled = template.decode([t for t, w in zip(weighted["input_ids"], weighted["loss_scale"], strict=True)
                               if w == 2.0])
    assert doubled == 'Action: get_weather\nAction Input: {"city": "Paris"}\nObservation:'


def test_a_react_prompt_ending_with_a_result_continues_the_assistants_turn(smollm2_tokenizer):
    template = get_template(None, smollm2_tokenizer, agent_template="react_en")
    encoded = template.encode({**MS_SWIFT_ROW, "messages": MS_SWIFT_ROW["messages"][:3]})
    assert template.decode(encoded["input_ids"]).endswith(
        '<|im_start|>assistant\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation:18 C, sunny\n')
    assert set(encoded["labels"]) == {IGNORE_INDEX}


def test_unknown_agent_template_names_the_closest(smollm2_tokenizer):
    with pytest.raises(ConfigError, match=r"--agent_template 'hermess' is unknown; did you mean \['hermes'"):
        get_template(None, smollm2_tokenizer, agent_template="hermess")


def test_the_acceptance_flags_build_and_encode_on_smollm2(smollm2_tokenizer):
    template = build_template(TemplateArgs(loss_scale="last_round", agent_template="hermes", use_chat_template=True,
                                           max_length=64), smollm2_tokenizer)
    row = {"messages": [user("Who are you?"), assistant("I am Corvid."), user("Again?"), assistant("Corvid.")]}
    assert trained(template, template.encode(row)) == "Corvid.<|im_end|>"


# ---------------------------------------------------------------- template flags


def test_use_chat_template_false_is_the_plain_generation_format(tokenizer_of, smollm2_tokenizer):
    row = {"messages": [system("ignored"), user("2+2="), assistant("4")]}
    for tokenizer, bos in ((tokenizer_of("llama3"), "<|begin_of_text|>"), (tokenizer_of("mistral"), "<s>"),
                           (smollm2_tokenizer, "")):
        template = get_template(None, tokenizer, use_chat_template=False)
        encoded = template.encode(row)
        assert template.decode(encoded["input_ids"]) == f"{bos}2+2=4{tokenizer.eos_token}"
        assert trained(template, encoded) == f"4{tokenizer.eos_token}"
        prompt = template.encode({"messages": row["messages"][:2]})
        assert template.decode(prompt["input_ids"]) == f"{bos}2+2="
        assert set(prompt["labels"]) == {IGNORE_INDEX}


def test_response_prefix_ends_generation_prompts_and_is_parsed_back(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    plain = get_template(None, tokenizer)
    template = get_template(None, tokenizer, response_prefix="<think>\n")
    row = {"messages": [user("Why?")]}
    ids, base = template.encode(row)["input_ids"], plain.encode(row)["input_ids"]
    assert ids[:len(base)] == base
    assert template.decode(ids[len(base):]) == "<think>\n"
    assert template.parse_response("hmm\n</think>\n\nBecause.") == {
        "content": "Because.", "reasoning_content": "hmm", "tool_calls": None}
    answer = {"messages": [user("Why?"), assistant("Because.")]}
    assert template.encode(answer) == plain.encode(answer)  # training rows: as ms-swift, inference only


def test_add_non_thinking_prefix_starts_plain_answers_with_the_empty_think_block(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")  # a chat template that knows no think blocks
    meta = dataclasses.replace(get_template_meta("qwen2_5"), non_thinking_prefix="<think>\n\n</think>\n\n")
    row = {"messages": [user("Hi"), assistant("Hello."), user("Bye"), assistant("Bye.")]}
    on = Template(meta, tokenizer, TemplateOptions())
    off = Template(meta, tokenizer, TemplateOptions(add_non_thinking_prefix=False))
    last = Template(meta, tokenizer, TemplateOptions(loss_scale="last_round"))
    assert trained(on, on.encode(row)).count("<think>\n\n</think>\n\n") == 2
    assert "<think>" not in trained(off, off.encode(row))
    assert trained(last, last.encode(row)) == "<think>\n\n</think>\n\nBye.<|im_end|>"
    assert "<think>" not in last.decode(last.encode(row)["input_ids"]).split("Bye")[0]  # only the last round
    qwen3 = tokenizer_of("qwen3")  # its template writes the block itself: the ids stay its own
    assert get_template(None, qwen3).encode(row)["input_ids"] == list(
        qwen3.apply_chat_template(row["messages"], tokenize=True, return_dict=False))
