"""--loss_scale: base strategies, '+' rules and per-message `loss` / `loss_scale`, by their effect on labels and
the per-token `loss_scale` column (real tokenizers)."""

from __future__ import annotations

import pytest

from swift.core import TemplateArgs, build_template, check_template_args
from swift.core.errors import ConfigError
from swift.core.template import IGNORE_INDEX, TemplateError, get_template
from swift.core.template.loss_scale import parse_loss_scale
from tests.core.template.conversations import WEATHER, assistant, call, tool, user

TOOL_ROW = {"tools": [WEATHER], "messages": [
    user("Weather in Paris?"),
    assistant("", tool_calls=[call("get_weather", {"city": "Paris"}, "call00001")]),
    tool("18 C, sunny"),
    assistant("It is 18 C and sunny in Paris.")]}
MULTI = [user("What is 2+2?"), assistant("Four."), user("And 3+3?"), assistant("Six.")]


def trained(template, encoded: dict) -> str:
    return template.decode([i for i, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                            if label != IGNORE_INDEX])


def weighted_text(template, encoded: dict, weight: float) -> str:
    """The text of the tokens whose loss_scale is `weight`."""
    return template.decode([i for i, w in zip(encoded["input_ids"], encoded["loss_scale"], strict=True)
                            if w == weight])


@pytest.mark.parametrize(("spec", "base", "rules"), [
    ("default", "default", ()),
    ("last_round", "last_round", ()),
    ("hermes", "default", ("hermes",)),
    ("last_round+hermes+ignore_empty_think", "last_round", ("hermes", "ignore_empty_think")),
    ("all+ignore_think_prefix", "all", ("ignore_think_prefix",)),
])
def test_strategies_parse_as_ms_swift_combines_them(spec, base, rules):
    plan = parse_loss_scale(spec)
    assert (plan.base, tuple(rule.name for rule in plan.rules)) == (base, rules)
    assert plan.is_binary == ("hermes" not in rules)


def test_a_base_after_a_rule_and_unknown_rules_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"'last_round' is a base strategy: put it first"):
        parse_loss_scale("ignore_empty_think+last_round")  # ms-swift refuses it too (KeyError there)
    with pytest.raises(ConfigError, match=r"'hermess' is unknown \(did you mean hermes"):
        parse_loss_scale("default+hermess")
    problems = check_template_args(TemplateArgs(loss_scale="reactt", agent_template="hermez",
                                                enable_channel_loss=True))
    assert len(problems) == 3
    assert "did you mean" in problems[0]
    assert "--agent_template 'hermez'" in problems[1]
    assert "--enable_channel_loss" in problems[2]


def test_enable_channel_loss_is_refused_rather_than_ignored(tokenizer_of):
    with pytest.raises(ConfigError, match="does not split the loss by the rows' 'channel'"):
        build_template(TemplateArgs(enable_channel_loss=True), tokenizer_of("qwen2_5"))


def test_last_round_trains_the_turns_after_the_last_user_or_tool_message(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    default = get_template(None, tokenizer).encode(TOOL_ROW)
    last = get_template(None, tokenizer, loss_scale="last_round").encode(TOOL_ROW)
    assert default["input_ids"] == last["input_ids"]
    template = get_template(None, tokenizer)
    assert "get_weather" in trained(template, default)
    assert "sunny in Paris" in trained(template, default)
    assert "get_weather" not in trained(template, last)
    assert trained(template, last) == "It is 18 C and sunny in Paris.<|im_end|>"
    assert "loss_scale" not in default  # 0/1 weights: labels say it all


def test_all_trains_every_token_except_turns_marked_loss_false(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    template = get_template(None, tokenizer, loss_scale="all")
    everything = template.encode({"messages": MULTI})
    assert everything["labels"] == everything["input_ids"]
    messages = [MULTI[0], {**MULTI[1], "loss": False}, *MULTI[2:]]
    encoded = template.encode({"messages": messages})
    assert encoded["input_ids"] == everything["input_ids"]
    text = trained(template, encoded)
    assert "What is 2+2?" in text
    assert "Six." in text
    assert "Four." not in text


def test_a_messages_loss_field_overrides_the_base_strategy(tokenizer_of):
    tokenizer = tokenizer_of("llama3")
    messages = [MULTI[0], {**MULTI[1], "loss": True}, MULTI[2], {**MULTI[3], "loss": False}]
    last = get_template(None, tokenizer, loss_scale="last_round")
    text = trained(last, last.encode({"messages": messages}))
    assert "Four." in text
    assert "Six." not in text
    default = get_template(None, tokenizer)
    assert "Six." not in trained(default, default.encode({"messages": messages}))


def test_ignore_empty_think_drops_the_empty_think_block_from_the_loss(tokenizer_of):
    tokenizer = tokenizer_of("qwen3")
    row = {"messages": [user("aaaaa"), assistant("abc")]}
    plain = get_template(None, tokenizer)
    ignoring = get_template(None, tokenizer, loss_scale="ignore_empty_think")
    encoded, base = ignoring.encode(row), plain.encode(row)
    assert encoded["input_ids"] == base["input_ids"]  # the template writes <think>\n\n</think>\n\n itself
    assert trained(plain, base) == "<think>\n\n</think>\n\nabc<|im_end|>"
    assert trained(ignoring, encoded) == "abc<|im_end|>"
    with_reasoning = {"messages": [user("aaaaa"), assistant("abc", reasoning_content="think hard")]}
    assert "think hard" in trained(ignoring, ignoring.encode(with_reasoning))


def test_ignore_think_prefix_keeps_the_reasoning_and_the_closing_tag(tokenizer_of):
    tokenizer = tokenizer_of("qwen3")
    row = {"messages": [user("Why?"), assistant("Because.", reasoning_content="Let me see.")]}
    template = get_template(None, tokenizer, loss_scale="ignore_think_prefix")
    text = trained(template, template.encode(row))
    assert text.startswith("Let me see.\n</think>")
    assert text.endswith("Because.<|im_end|>")
    assert "<think>" not in text.replace("</think>", "")


def test_hermes_weighs_tool_calls_2_and_rows_carry_a_loss_scale_column(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    template = get_template(None, tokenizer, loss_scale="hermes")
    encoded = template.encode(TOOL_ROW)
    assert encoded["input_ids"] == get_template(None, tokenizer).encode(TOOL_ROW)["input_ids"]
    weights = encoded["loss_scale"]
    assert len(weights) == len(encoded["input_ids"])
    assert set(weights) == {0.0, 1.0, 2.0}
    assert all((w > 0) == (label != IGNORE_INDEX) for w, label in zip(weights, encoded["labels"], strict=True))
    assert weighted_text(template, encoded, 2.0) == ('<tool_call>\n{"name": "get_weather", "arguments": '
                                                     '{"city": "Paris"}}\n</tool_call>')
    assert "sunny in Paris." in weighted_text(template, encoded, 1.0)
    last = get_template(None, tokenizer, loss_scale="last_round+hermes").encode(TOOL_ROW)
    assert 2.0 not in last["loss_scale"]  # the call is before the last tool message: no loss at all


def test_react_keywords_weigh_actions_2_and_observations_0(tokenizer_of):
    """An answer that writes its whole ReAct trace itself (ms-swift's react.json on the response text)."""
    tokenizer = tokenizer_of("qwen2_5")
    answer = ("Thought: look it up\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}\n"
              "Observation: 18 C\nThought: done\nFinal Answer: 18 C in Paris.")
    template = get_template(None, tokenizer, loss_scale="react")
    encoded = template.encode({"messages": [user("Weather in Paris?"), assistant(answer)]})
    doubled = weighted_text(template, encoded, 2.0)
    assert doubled.startswith("Action: get_weather\nAction Input:")
    assert doubled.endswith("Observation:")
    assert "18 C\n" not in trained(template, encoded).split("Observation:")[1].split("Thought")[0]
    assert "Final Answer: 18 C in Paris." in weighted_text(template, encoded, 1.0)


def test_a_messages_loss_scale_field_fixes_its_turns_weight(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    messages = [MULTI[0], {**MULTI[1], "loss_scale": 3.0}, *MULTI[2:]]
    template = get_template(None, tokenizer, loss_scale="hermes")
    encoded = template.encode({"messages": messages})
    assert weighted_text(template, encoded, 3.0) == "Four.<|im_end|>"
    with pytest.raises(TemplateError, match=r"loss_scale is 3\.0, but --loss_scale default gives only 0/1"):
        get_template(None, tokenizer).encode({"messages": messages})


def test_weights_survive_truncation_collation_and_packing(tokenizer_of):
    tokenizer = tokenizer_of("qwen2_5")
    template = get_template(None, tokenizer, loss_scale="hermes", max_length=40, truncation_strategy="left")
    row = template.encode(TOOL_ROW)
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["loss_scale"]) == 40
    short = template.encode({"messages": MULTI[:2]})
    padded = template.data_collator([row, short])
    assert padded["loss_scale"].shape == padded["input_ids"].shape == (2, 40)
    assert padded["loss_scale"][1, len(short["input_ids"]):].abs().sum() == 0
    flat = template.data_collator([row, short], padding_free=True)
    assert flat["loss_scale"].shape == flat["input_ids"].shape == (1, 40 + len(short["input_ids"]))
    packed = template.collate_packed([{**row, "position_ids": list(range(40))}])
    assert packed["loss_scale"].tolist() == [row["loss_scale"]]


def test_a_plugin_rule_is_a_loss_scale_choice(tokenizer_of, monkeypatch):
    from swift.core.template import LOSS_SCALES, LossScaleMeta, register_loss_scale

    monkeypatch.setattr("swift.core.template.loss_scale.LOSS_SCALES", dict(LOSS_SCALES))
    register_loss_scale(LossScaleMeta(name="no_sorry", patterns={r"Sorry[^.]*\.\s*": 0.0}))
    template = get_template(None, tokenizer_of("qwen2_5"), loss_scale="last_round+no_sorry")
    encoded = template.encode({"messages": [user("Hi"), assistant("Sorry for the wait. Hello!")]})
    assert trained(template, encoded) == " Hello!<|im_end|>"  # " Hello" is one token: it overlaps the answer
