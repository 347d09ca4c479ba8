"""The OpenAI-schema types: what they accept, what they refuse, how messages reach the template."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from swift.infer.protocol import ChatCompletionRequest, CompletionRequest, InferRequest


def test_a_chat_request_splits_into_request_and_config():
    body = ChatCompletionRequest.model_validate({
        "model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                   {"role": "user", "content": "Hi"}],
        "stop": "END", "max_completion_tokens": 9, "temperature": 0, "unknown_field": 1})
    config = body.request_config()
    assert (config.stop, config.max_tokens, config.temperature) == (["END"], 9, 0)
    row = body.infer_request().template_row()
    assert row["messages"][0] == {"role": "system", "content": "Be brief."}


def test_tool_call_arguments_reach_templates_as_objects():
    request = InferRequest.model_validate({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})
    call = request.template_row()["messages"][1]["tool_calls"][0]
    assert call == {"type": "function", "id": "call_1", "function": {"name": "w", "arguments": {"city": "Paris"}}}


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
])
def test_bad_chat_requests_name_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"model": "m", **body})
    assert field in str(caught.value)


def test_the_legacy_logprobs_count_means_top_logprobs():
    body = CompletionRequest.model_validate({"model": "m", "prompt": "Hi", "logprobs": 3})
    assert (body.logprobs, body.top_logprobs) == (True, 3)
