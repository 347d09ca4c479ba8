"""parse_response: reasoning and tool calls in every registered answer format."""

from __future__ import annotations

import json

import pytest

from swift.core.template import parse_response


def calls(parsed: dict) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed["tool_calls"] or []]


def test_plain_text_and_reasoning():
    assert parse_response("Hello.") == {"content": "Hello.", "reasoning_content": None, "tool_calls": None}
    assert parse_response("<think>\nstep 1\n</think>\n\nDone.") == {
        "content": "Done.", "reasoning_content": "step 1", "tool_calls": None}
    assert parse_response("opened in the prompt\n</think>\n\nDone.")["reasoning_content"] == "opened in the prompt"
    assert parse_response("<think>\nstill thinking") == {
        "content": "", "reasoning_content": "still thinking", "tool_calls": None}


def test_hermes_tool_calls():
    text = ('<think>\nneed weather\n</think>\n\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    parsed = parse_response(text, "hermes")
    assert parsed["content"] == "Checking."
    assert parsed["reasoning_content"] == "need weather"
    assert calls(parsed) == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert parsed["tool_calls"][0]["type"] == "function"
    broken = "<tool_call>\n{not json}\n</tool_call>"
    assert parse_response(broken, "hermes") == {"content": broken, "reasoning_content": None, "tool_calls": None}


def test_llama3_json_calls():
    parsed = parse_response('{"name": "get_weather", "parameters": {"city": "Paris"}}', "llama3_json")
    assert calls(parsed) == [("get_weather", {"city": "Paris"})]
    assert parsed["content"] == ""
    tagged = parse_response('<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}',
                            "llama3_json")
    assert calls(tagged) == [("a", {}), ("b", {"x": 1})]
    assert parse_response('{"city": "Paris"}', "llama3_json")["tool_calls"] is None  # JSON, but not a call


def test_mistral_calls_keep_their_ids():
    parsed = parse_response('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]',
                            "mistral")
    assert calls(parsed) == [("get_weather", {"city": "Paris"})]
    assert parsed["tool_calls"][0]["id"] == "abcDEF123"


@pytest.mark.parametrize(("text", "response_format"), [
    ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```"
     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "deepseek"),
    ('get_weather\n{"city": "Paris"}', "glm4"),
    ('<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": {"city": "Paris"}}<|action_end|>', "internlm2"),
])
def test_other_families(text, response_format):
    parsed = parse_response(text, response_format)
    assert calls(parsed) == [("get_weather", {"city": "Paris"})]
    assert parsed["content"] == ""


def test_glm4_leaves_ordinary_answers_alone():
    assert parse_response("Sure\nhere it is", "glm4")["tool_calls"] is None
