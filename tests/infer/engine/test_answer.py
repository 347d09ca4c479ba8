"""Answers into content / reasoning / tool calls: the concatenated stream deltas always equal the whole parse."""

from __future__ import annotations

import json
import random

import pytest

from swift.infer.engine.answer import AnswerParser, AnswerStream

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CASES = [
    ("plain", False, False, "  Hello there!  \n"),
    ("plain", False, False, "<think>\nweighing it\n</think>\n\nThe answer is 4."),
    ("plain", False, True, "still thinking\n</think>\n\nDone."),
    ("plain", False, True, "cut off while thinking"),
    ("plain", False, False, "<thinking is a word> not a tag"),
    ("hermes", True, False, "Let me check. " + HERMES_CALL),
    ("hermes", True, False, HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Rome")),
    ("hermes", True, False, "<think>\nneed weather\n</think>\n\n" + HERMES_CALL),
    ("hermes", True, False, "Broken: <tool_call>\n{not json}\n</tool_call> after"),
    ("hermes", False, False, "No tools offered: " + HERMES_CALL),
    ("hermes", True, False, "Talk about <tool_ without a call"),
    ("llama3_json", True, False, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("llama3_json", True, False, "Plain answer {not a call}"),
    ("mistral", True, False, 'Sure. [TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}]'),
    ("glm4", True, False, 'get_weather\n{"city": "Paris"}'),
    ("glm4", True, False, "Hello\nworld"),
]


def stream_parse(parser: AnswerParser, text: str, rng: random.Random) -> tuple[str, str, list | None]:
    stream, reasoning, content = AnswerStream(parser), "", ""
    at = 0
    while at < len(text):
        step = rng.randint(1, 6)
        r, c = stream.feed(text[at:at + step])
        reasoning, content, at = reasoning + r, content + c, at + step
    r, c, calls = stream.finish()
    return reasoning + r, content + c, calls


@pytest.mark.parametrize(("fmt", "has_tools", "opens_think", "text"), CASES)
def test_streamed_deltas_add_up_to_the_whole_answer(fmt, has_tools, opens_think, text):
    parser = AnswerParser(fmt, ("<|im_end|>",), has_tools=has_tools, opens_think=opens_think)
    whole = parser.parse(text)
    for seed in range(20):
        reasoning, content, calls = stream_parse(parser, text, random.Random(seed))
        assert content == whole.content
        assert reasoning == (whole.reasoning_content or "")
        assert [c["function"] for c in calls or []] == [c["function"] for c in whole.tool_calls or []]


def test_tool_calls_parse_with_ids_and_json_arguments():
    answer = AnswerParser("hermes", has_tools=True, opens_think=False).parse("Let me check. " + HERMES_CALL)
    assert answer.content == "Let me check."
    (call,) = answer.tool_calls
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_reasoning_is_split_and_an_opened_think_block_counts():
    parser = AnswerParser("plain", has_tools=False, opens_think=True)
    answer = parser.parse("step one\n</think>\n\nFour.")
    assert (answer.reasoning_content, answer.content) == ("step one", "Four.")
    assert parser.parse("still going").reasoning_content == "still going"


def test_nothing_that_may_become_a_tool_call_is_streamed_early():
    stream = AnswerStream(AnswerParser("hermes", has_tools=True, opens_think=False))
    assert stream.feed("Checking <tool") == ("", "Checking")
    assert stream.feed("_call>\n{") == ("", "")
    assert stream.finish()[1] == " <tool_call>\n{"  # never closed: it stays text, sent at the end
