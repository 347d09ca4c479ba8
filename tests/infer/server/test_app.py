"""`swift deploy`'s app on a real uvicorn server (127.0.0.1, a free port) with the official openai client."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import time
import traceback
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from swift.infer.engine.errors import EngineError
from tests.infer.conftest import live_server, wait_for

KEY = "sk-test-key"
HELLO = [{"role": "user", "content": "Hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def tiny_url(tiny_engine):
    with live_server(tiny_engine, api_key=KEY) as url:
        yield url


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def test_models_chat_and_usage(tiny_url, tiny_engine):
    c = client(tiny_url)
    assert [m.id for m in c.models.list().data] == [tiny_engine.model_name]
    reply = c.chat.completions.create(model=tiny_engine.model_name, messages=HELLO, temperature=0, max_tokens=8)
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8


def test_stream_equals_non_stream_at_temperature_0(tiny_url, tiny_engine):
    c = client(tiny_url)
    kwargs = {"model": tiny_engine.model_name, "messages": [{"role": "user", "content": "Name a colour"}],
              "temperature": 0, "max_tokens": 16, "frequency_penalty": 2.0}
    whole = c.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert whole
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole
    assert chunks[-1].usage.completion_tokens == 16


def test_completions_endpoint(tiny_url, tiny_engine):
    c = client(tiny_url)
    reply = c.completions.create(model=tiny_engine.model_name, prompt="Once upon a time", max_tokens=6,
                                 temperature=0)
    assert reply.usage.completion_tokens == 6
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=tiny_engine.model_name, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True)
        if ch.choices)
    assert streamed == reply.choices[0].text


@pytest.mark.parametrize(("prompt", "bad"), [([10**9], 10**9), ([-1, 5], -1), ([[1, 2], [3, 10**9]], 10**9)],
                         ids=["huge", "negative", "a list of prompts"])
def test_completions_refuse_token_ids_outside_the_vocabulary_and_others_go_on(tiny_url, tiny_engine, prompt, bad):
    c, vocab = client(tiny_url), len(tiny_engine.tokenizer)

    def good():
        return c.completions.create(model=tiny_engine.model_name, prompt="Once upon a time", max_tokens=12,
                                    temperature=0)

    def refused():
        with pytest.raises(openai.BadRequestError) as caught:
            c.completions.create(model=tiny_engine.model_name, prompt=prompt, max_tokens=4)
        return caught.value.response.json()["error"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # sent together: they could share a prefill batch
        goods = [pool.submit(good) for _ in range(2)]
        errors = [pool.submit(refused) for _ in range(2)]
        replies = [future.result() for future in goods]
        errors = [future.result() for future in errors]
    assert all(r.usage.completion_tokens == 12 for r in replies)
    for error in errors:
        assert error["param"] == "prompt"
        assert f"token id {bad} is outside the vocabulary" in error["message"]
        assert f"vocabulary size {vocab}" in error["message"]
    assert good().usage.completion_tokens == 12


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "wizard", "content": 3}]}, "messages[0].role"),
    ({"messages": HELLO, "temperature": 9}, "temperature"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({}, "messages"),
])
def test_bad_requests_are_400_naming_the_field(tiny_url, tiny_engine, body, param):
    response = httpx.post(f"{tiny_url}/chat/completions", json={"model": tiny_engine.model_name, **body},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split("[")[0].split(".")[-1] in error["message"]


def test_malformed_json_unknown_models_and_long_prompts(tiny_url, tiny_engine):
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    assert httpx.post(f"{tiny_url}/chat/completions", content=b"{not json", headers=headers).status_code == 400
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(tiny_url).chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="at most 512 tokens"):
        client(tiny_url).chat.completions.create(model=tiny_engine.model_name,
                                                 messages=[{"role": "user", "content": "word " * 600}])


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                              ("POST", "/v1/completions"), ("GET", "/health"),
                                              ("GET", "/metrics")])
def test_a_wrong_or_missing_key_is_401_on_every_endpoint(tiny_url, method, path):
    root = tiny_url.removesuffix("/v1")
    for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": KEY}):
        response = httpx.request(method, root + path, headers=headers, json={})
        assert response.status_code == 401, (path, headers)
        assert response.json()["error"]["code"] == "invalid_api_key"
    good = httpx.request(method, root + path, headers={"Authorization": f"Bearer {KEY}"}, json={})
    assert good.status_code in (200, 400)  # 400: the empty body of a POST
    with pytest.raises(openai.AuthenticationError):
        client(tiny_url, key="wrong").models.list()


def test_concurrent_requests_share_the_engine_batches(tiny_url, tiny_engine):
    c = client(tiny_url)
    tiny_engine.generator.max_rows_seen = 0

    def ask(i: int):
        return c.chat.completions.create(model=tiny_engine.model_name, temperature=0, max_tokens=24,
                                         messages=[{"role": "user", "content": f"Count to {i}"}])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(8)))
    assert all(r.usage.completion_tokens == 24 for r in replies)
    assert tiny_engine.generator.max_rows_seen >= 4


@pytest.fixture(scope="module")
def endless_engine(tiny_llama_dir):
    """The tiny llama with room for a million tokens: its long answers end by an abort, never while a test waits."""
    from swift.infer.engine import PtEngine

    with PtEngine(str(tiny_llama_dir), max_model_len=1_000_000, model_name="endless") as engine:
        yield engine


def test_a_client_that_disconnects_cancels_its_generation(endless_engine):
    generator = endless_engine.generator
    body = {"model": "endless", "messages": HELLO, "max_tokens": 900_000, "temperature": 0}
    with live_server(endless_engine) as url:
        with httpx.stream("POST", f"{url}/chat/completions", json={**body, "stream": True}, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    break
        wait_for(lambda: generator.aborted == 1, "the engine to abort the stream its client left")
        assert generator.active == 0
        # a non-streamed request whose client gives up: the connection closes while the engine decodes
        payload = json.dumps({**body, "stream": False}).encode()
        with socket.create_connection(("127.0.0.1", urlsplit(url).port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json"
                         b"\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
            wait_for(lambda: generator.active == 1 and generator.steps > 0, "the engine to decode the request")
        wait_for(lambda: generator.aborted == 2, "the engine to abort the request its client left")
        assert generator.active == 0


def test_metrics_count_requests_tokens_and_latency(tiny_url, tiny_engine):
    client(tiny_url).chat.completions.create(model=tiny_engine.model_name, messages=HELLO, max_tokens=3)
    text = httpx.get(tiny_url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'swift_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert 'swift_requests_total{endpoint="/v1/chat/completions",status="400"}' in text
    generated = next(line for line in text.splitlines() if line.startswith("swift_generation_tokens_total"))
    assert int(generated.split()[1]) >= 3
    assert 'swift_request_latency_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}' in text


def test_named_adapters_are_served_as_model_ids(tiny_llama_dir, adapter_dirs):
    from swift.infer.engine import PtEngine

    a, b = adapter_dirs
    with PtEngine(str(tiny_llama_dir), adapters={"a": a, "b": b}, model_name="base") as engine, \
            live_server(engine) as url:
        c = client(url)
        listed = c.models.list().data
        assert [(m.id, getattr(m, "parent", None)) for m in listed] == [("base", None), ("a", "base"), ("b", "base")]
        answers = {name: c.chat.completions.create(model=name, messages=HELLO, temperature=0, max_tokens=8,
                                                   frequency_penalty=2.0).choices[0].message.content
                   for name in ("base", "a", "b")}
    assert len(set(answers.values())) == 3


@pytest.fixture
def scripted_url(scripted_engine):
    with live_server(scripted_engine, max_concurrency=1) as url:
        yield url


def test_tools_round_trip(scripted_url):
    c = client(scripted_url)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    reply = c.chat.completions.create(model="scripted", messages=ask, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    deltas = [ch.choices[0].delta for ch in c.chat.completions.create(model="scripted", messages=ask, tools=TOOLS,
                                                                      stream=True) if ch.choices]
    streamed = [tc for d in deltas for tc in d.tool_calls or []]
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in streamed] == [
        (0, "get_weather", {"city": "Paris"})]
    follow_up = [*ask, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    assert c.chat.completions.create(model="scripted", messages=follow_up, tools=TOOLS).choices[0].message


def test_beyond_max_concurrency_is_429(scripted_url, scripted_engine):
    scripted_engine.generator.delay = 0.05  # ~40 steps: 2 s
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client(scripted_url).chat.completions.create, model="scripted", messages=HELLO)
        deadline = time.monotonic() + 10
        while scripted_engine.generator.started == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError, match="max_concurrency"):
            client(scripted_url).chat.completions.create(model="scripted", messages=HELLO)
        assert slow.result().choices[0].message.content


SECRET = "/home/alice/models/private-7b: tensor of shape [3, 4096]"


@pytest.fixture
def server_log(caplog):
    """The server's log records, uvicorn's own too (its loggers do not propagate to the root logger)."""
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    yield caplog
    uvicorn_logger.removeHandler(caplog.handler)


def tracebacks(log, kind: type[BaseException]) -> list[logging.LogRecord]:
    """Records that carry a traceback in which an exception of `kind` was raised."""
    return [r for r in log.records if r.exc_info and f"{kind.__name__}: " in "".join(
        traceback.format_exception(*r.exc_info))]


def test_a_failure_in_the_engine_is_a_500_naming_only_its_request_id(scripted_url, scripted_engine, server_log):
    scripted_engine.generator.fail_next = RuntimeError(SECRET)
    with pytest.raises(openai.InternalServerError) as caught:
        client(scripted_url).chat.completions.create(model="scripted", messages=HELLO)
    response = caught.value.response
    assert "/home/alice" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["error"]["message"]
    (logged,) = tracebacks(server_log, RuntimeError)  # once, where the engine caught it, under the request's id
    assert request_id in logged.getMessage()
    assert SECRET in "".join(traceback.format_exception(*logged.exc_info))

    scripted_engine.generator.fail_next = EngineError(SECRET)  # a stream that fails after its first chunk
    streamed = httpx.post(f"{scripted_url}/chat/completions",
                          json={"model": "scripted", "messages": HELLO, "stream": True})
    (error,) = [json.loads(line[6:])["error"] for line in streamed.text.splitlines() if '"error"' in line]
    assert "/home/alice" not in streamed.text
    assert streamed.headers["x-request-id"] in error["message"]
    assert error["type"] == "server_error"
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert client(scripted_url).chat.completions.create(model="scripted", messages=HELLO).choices[0].message.content


def test_an_unexpected_error_is_a_500_with_its_traceback_logged_once(scripted_url, scripted_engine, server_log,
                                                                     monkeypatch):
    async def broken(*args, **kwargs):
        raise KeyError(SECRET)

    monkeypatch.setattr(scripted_engine, "infer_async", broken)
    response = httpx.post(f"{scripted_url}/chat/completions", json={"model": "scripted", "messages": HELLO})
    assert response.status_code == 500
    assert "/home/alice" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["error"]["message"]
    (logged,) = tracebacks(server_log, KeyError)
    assert request_id in logged.getMessage()


def test_every_answer_carries_a_request_id_and_client_errors_keep_their_message(scripted_url):
    ids = set()
    for method, path, body in [("GET", "/models", None), ("POST", "/chat/completions", {"model": "nope",
                                                                                         "messages": HELLO})]:
        response = httpx.request(method, scripted_url + path, json=body)
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 2
    assert "does not exist" in response.json()["error"]["message"]  # a 404 still says what to fix
