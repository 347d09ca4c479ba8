"""Answers are read in the training template's agent format (`--agent_template`): what the template trains a model to
write parses back into OpenAI tool_calls, streamed or not, with `--response_prefix` put back; a checkpoint trained
with an agent format serves with it."""

from __future__ import annotations

import json

import pytest

from swift.core import get_template
from swift.infer.engine.answer import _CALL_MARKERS, AnswerParser, AnswerStream

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def trained_answer(template) -> str:
    """The assistant text the template puts the loss on for one tool call: what a model trained on it generates."""
    row = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                        {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]}], "tools": TOOLS}
    encoded = template.encode(row)
    return template.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                            if label != -100])


def stream(parser: AnswerParser, text: str, size: int) -> tuple[list[str], list | None]:
    answer = AnswerStream(parser)
    deltas = [answer.feed(text[i:i + size])[1] for i in range(0, len(text), size)]
    _, last, calls = answer.finish()
    return [*deltas, last], calls


@pytest.mark.parametrize(("agent", "fmt", "marker"), [("hermes", "hermes", "<tool_call>"),
                                                      ("react_en", "react", "Action:"),
                                                      ("qwen_en", "qwen", "✿FUNCTION✿"),
                                                      ("mistral", "mistral", "[TOOL_CALLS]")])
def test_a_trained_tool_call_parses_and_streams_as_tool_calls(smollm2_tokenizer, agent, fmt, marker):
    template = get_template(None, smollm2_tokenizer, agent_template=agent)
    assert template.response_format == fmt
    text = trained_answer(template)
    assert marker in text
    parser = AnswerParser.for_template(template, has_tools=True, opens_think=False)
    answer = parser.parse(text)
    assert answer.content == "Let me check."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert all(c["id"].startswith("call_") for c in answer.tool_calls)
    for size in (1, 3, 7):  # the marker split across deltas at every offset
        deltas, calls = stream(parser, text, size)
        assert "".join(deltas) == "Let me check."
        assert not any(part in "".join(deltas) for part in (marker[:3], "get_weather", "Paris"))
        assert [c["function"]["name"] for c in calls] == ["get_weather"]


def test_every_format_with_keyword_calls_has_a_stream_marker():
    from swift.core.template import AGENT_TEMPLATES

    formats = {agent.response_format for agent in AGENT_TEMPLATES.values()}
    assert formats - {"glm4", "llama3_json"} <= set(_CALL_MARKERS)  # those two are recognised by their shape


def test_the_response_prefix_is_put_back_before_parsing(smollm2_tokenizer):
    template = get_template(None, smollm2_tokenizer, agent_template="hermes", response_prefix="<think>\n")
    prompt = template.decode(template.encode({"messages": [{"role": "user", "content": "Hi"}]})["input_ids"])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    generated = 'Paris needs a lookup.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    # the engine's check of the prompt's tail (`opens_think`) sees the prefix's <think>: it is not doubled
    parser = AnswerParser.for_template(template, has_tools=True, opens_think=True)
    answer = parser.parse(generated)
    assert answer.reasoning_content == "Paris needs a lookup."
    assert answer.content == ""
    assert answer.tool_calls[0]["function"]["name"] == "get_weather"
    streamed = AnswerStream(parser)
    reasoning = "".join(streamed.feed(generated[i:i + 2])[0] for i in range(0, len(generated), 2))
    assert reasoning + streamed.finish()[0] == "Paris needs a lookup."
    plain = get_template(None, smollm2_tokenizer, response_prefix="Sure, ")
    assert AnswerParser.for_template(plain, has_tools=False, opens_think=False).parse("here it is.").content == (
        "Sure, here it is.")


def test_the_engine_answers_start_with_the_response_prefix(tiny_llama_dir, smollm2_tokenizer):
    from swift.infer.engine import PtEngine
    from swift.infer.protocol import RequestConfig

    template = get_template(None, smollm2_tokenizer, response_prefix="Sure, ")
    with PtEngine(str(tiny_llama_dir), max_batch_size=2, template=template) as engine:
        request = {"messages": [{"role": "user", "content": "Hi"}]}
        config = RequestConfig(temperature=0, max_tokens=4)
        response = engine.infer([request], config)[0]
        chunks = engine.run(_collect(engine.stream(request, config)))
    answer = response.choices[0].message.content
    assert answer.startswith("Sure,")
    assert answer.count("Sure,") == 1
    plain_prompt = get_template(None, smollm2_tokenizer).encode(request)["input_ids"]
    prefix_ids = smollm2_tokenizer("Sure, ", add_special_tokens=False)["input_ids"]
    assert response.usage.prompt_tokens == len(plain_prompt) + len(prefix_ids)  # the prefix was prompted, not generated
    assert "".join(chunks) == answer


async def _collect(chunks) -> list[str]:
    return [c.choices[0].delta.content or "" async for c in chunks if c.choices]


def test_react_answers_stop_where_the_tool_result_would_follow(smollm2_tokenizer, tiny_llama_dir):
    from swift.infer.engine import PtEngine

    template = get_template(None, smollm2_tokenizer, agent_template="react_en")
    with PtEngine(str(tiny_llama_dir), max_batch_size=2, template=template) as engine:
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        with_tools = engine._prepare_chat({"messages": messages, "tools": TOOLS}, None, None)
        without = engine._prepare_chat({"messages": messages}, None, None)
    assert "Observation:" in with_tools.params.stop
    assert with_tools.parser.response_format == "react"  # the agent format's, not the chat template family's
    assert "Observation:" not in without.params.stop


def test_a_checkpoint_serves_with_the_agent_format_it_was_trained_in(tiny_llama_dir, tmp_path, smollm2_tokenizer):
    from swift.core.arguments import parse_args
    from swift.infer.arguments import InferArguments
    from swift.infer.backends import _template
    from swift.infer.checkpoint import resolve_serve_spec

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_llama_dir)}))
    (tmp_path / "args.json").write_text(json.dumps({"model": str(tiny_llama_dir), "template_name": "smollm2",
                                                    "agent_template": "react_en", "response_prefix": "Thought: "}))
    args = parse_args(InferArguments, ["--adapters", str(tmp_path)], prog="swift infer")
    spec = resolve_serve_spec(args)
    assert (spec.agent_template, spec.response_prefix) == ("react_en", "Thought: ")
    template = _template(args, spec, smollm2_tokenizer)
    assert template.response_format == "react"
    assert template.options.response_prefix == "Thought: "
    flags = parse_args(InferArguments, ["--adapters", str(tmp_path), "--agent_template", "qwen_en",
                                        "--response_prefix", ""], prog="swift infer")
    spec = resolve_serve_spec(flags)  # the command line wins
    assert (spec.agent_template, spec.response_prefix) == ("qwen_en", "")
    assert _template(flags, spec, smollm2_tokenizer).response_format == "qwen"
