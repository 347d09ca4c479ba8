"""The chat code of swift app / web-ui: streamed from our own server started in process, and shown for Gradio."""

from __future__ import annotations

import itertools

from swift.ui.chat import display


def test_reasoning_is_folded_and_tool_calls_are_their_own_messages():
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.",
         "tool_calls": [{"id": "1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "assistant", "content": "Sunny."},
    ]
    shown = display(conversation, "en")
    assert [m["role"] for m in shown] == ["user", "assistant", "assistant", "assistant"]
    assert shown[1]["metadata"]["title"] == "Thinking"
    assert shown[1]["content"] == "I should call the tool."
    assert shown[2]["metadata"]["title"] == "Tool call: get_weather"
    assert '{"city": "Paris"}' in shown[2]["content"]
    assert shown[3] == {"role": "assistant", "content": "Sunny."}
    assert display(conversation, "zh")[1]["metadata"]["title"] == "思考过程"


def test_replies_stream_from_our_own_server_in_process(tiny_llama_dir):
    from swift.core.arguments import ModelArgs
    from swift.infer.arguments import DeployArguments, InferArgs
    from swift.infer.eval.endpoint import own_server
    from swift.ui.chat import ChatBackend, sampling, stream_reply

    args = DeployArguments(model=ModelArgs(model=str(tiny_llama_dir)), infer=InferArgs(seed=0))
    with own_server(args) as endpoint:
        assert endpoint.url.startswith("http://127.0.0.1:")
        backend = ChatBackend(endpoint.url, endpoint.api_key, endpoint.models[0])
        # Sampling makes the random tiny model say something (its greedy answer is an immediate end of text).
        steps = [dict(reply) for reply in stream_reply(backend, [{"role": "user", "content": "Hello"}], "Be brief.",
                                                       sampling(1.0, 1.0, 12))]
    texts = [step["content"] for step in steps]
    assert len(texts) >= 3  # several chunks, each extending the last
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert texts[-1]
