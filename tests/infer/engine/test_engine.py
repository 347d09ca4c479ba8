"""InferEngine (the chat layer every backend shares): sampling defaults, requests it refuses, tool-call responses."""

from __future__ import annotations

import pytest

from swift.infer.engine.errors import EngineError, RequestError, UnknownAdapterError
from swift.infer.protocol import RequestConfig
from tests.infer.conftest import wait_for

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}


def test_request_values_win_over_engine_defaults_and_the_generation_config(scripted_engine):
    engine = scripted_engine
    engine.default_config = RequestConfig(temperature=0.7, max_tokens=50, stop=["END"])
    engine.generation_config = {"do_sample": True, "temperature": 0.3, "top_k": 20, "top_p": 0.9}
    params = engine.sampling_params(RequestConfig(top_p=0.5), prompt_tokens=10)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.7, 0.5, 20, 50)
    assert "END" in params.stop
    engine.default_config = RequestConfig()
    assert engine.sampling_params(RequestConfig(), 10).temperature == 0.3
    engine.generation_config = {}
    assert engine.sampling_params(RequestConfig(), 10).temperature == 0.0  # no do_sample: greedy
    assert engine.sampling_params(RequestConfig(max_tokens=10_000), 4000).max_tokens == 96  # the context is 4096


def test_template_stop_words_become_stop_tokens(scripted_engine):
    im_end = scripted_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in scripted_engine.sampling_params(RequestConfig(), 10).stop_token_ids


def test_tool_calls_come_back_parsed_with_finish_reason_tool_calls(scripted_engine):
    response = scripted_engine.infer([ASK])[0]
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert choice.message.tool_calls[0].id.startswith("call_")


def test_without_tools_the_call_text_stays_content(scripted_engine):
    response = scripted_engine.infer([{"messages": ASK["messages"]}])[0]
    assert response.choices[0].finish_reason == "stop"
    assert "<tool_call>" in response.choices[0].message.content


def test_tools_are_rendered_into_the_prompt(scripted_engine):
    with_tools = scripted_engine._prepare_chat(ASK, None, None).prompt_ids
    without = scripted_engine._prepare_chat({"messages": ASK["messages"]}, None, None).prompt_ids
    assert "get_weather" in scripted_engine.tokenizer.decode(with_tools)
    assert len(with_tools) > len(without)


def test_unknown_adapters_and_refused_conversations_are_request_errors(scripted_engine):
    with pytest.raises(UnknownAdapterError):
        scripted_engine.infer([ASK], adapter="nope")
    with pytest.raises(RequestError) as caught:
        scripted_engine.infer([{"messages": [{"role": "user", "content": "x" * 20000}]}])
    assert caught.value.param == "messages"


def test_the_stream_sends_tool_calls_as_deltas(scripted_engine):
    async def collect():
        return [chunk async for chunk in scripted_engine.stream(ASK, include_usage=True)]

    chunks = scripted_engine.run(collect())
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert content == "Let me check."
    assert [(call.index, call.function.name) for call in calls] == [(0, "get_weather")]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_n_streamed_choices_come_with_their_index(scripted_engine):
    async def collect():
        return [chunk async for chunk in scripted_engine.stream({"messages": ASK["messages"]}, RequestConfig(n=2))]

    chunks = scripted_engine.run(collect())
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] == texts[1]
    assert texts[0].startswith("Let me check.")


def test_a_backend_failure_is_an_engine_error_chained_to_it_and_logged_once(scripted_engine, caplog):
    scripted_engine.generator.fail_next = RuntimeError("the backend fell over")
    with pytest.raises(EngineError, match="fell over") as caught:
        scripted_engine.infer([ASK])
    assert isinstance(caught.value.__cause__, RuntimeError)
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert logged.exc_info[1] is caught.value.__cause__


@pytest.mark.parametrize("bad", [10**9, -1, "vocabulary size"], ids=["huge", "negative", "one past the end"])
def test_token_id_prompts_outside_the_vocabulary_are_refused_before_the_model(tiny_engine, bad):
    vocab = len(tiny_engine.tokenizer)
    bad = vocab if bad == "vocabulary size" else bad
    wait_for(lambda: tiny_engine.generator.active == 0, "the engine to be idle")
    steps = tiny_engine.generator.steps
    with pytest.raises(RequestError, match=rf"token id {bad} is outside the vocabulary.*size {vocab}\)") as caught:
        tiny_engine.run(tiny_engine.complete_async([1, 2, bad]))
    assert caught.value.param == "prompt"
    with pytest.raises(RequestError, match=f"token id {bad}"):
        tiny_engine.complete_stream([bad])
    assert tiny_engine.generator.steps == steps
    assert tiny_engine.run(tiny_engine.complete_async([1, 2, vocab - 1], RequestConfig(max_tokens=2))).usage
