"""PtGenerator: greedy output equals model.generate, requests join a running batch, aborts free rows, a failed step
fails only its requests."""

from __future__ import annotations

import asyncio
import time
import traceback

import pytest
import torch

from swift.infer.engine.errors import EngineError
from swift.infer.engine.types import GenerationRequest, SamplingParams
from tests.infer.conftest import wait_for

PROMPTS = ["Hi", "Tell me about the sea and the sky, please.", "What is two plus two?",
           "A much longer question about rivers, mountains, forests and the animals that live in them?"]


def prompt_ids(engine, text: str) -> list[int]:
    return engine.template.encode({"messages": [{"role": "user", "content": text}]})["input_ids"]


def generate_ids(engine, ids: list[int], max_tokens: int, **params) -> list[int]:
    async def run() -> list[int]:
        request = GenerationRequest(f"t-{time.monotonic_ns()}", ids, SamplingParams(max_tokens=max_tokens, **params))
        out: list[int] = []
        async for output in engine.generator.generate(request):
            out += output.token_ids
        return out

    return engine.run(run())


def reference_ids(model, ids: list[int], max_tokens: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return out[0, len(ids):].tolist()


def test_greedy_output_equals_model_generate(tiny_engine):
    for text in PROMPTS[:2]:
        ids = prompt_ids(tiny_engine, text)
        assert generate_ids(tiny_engine, ids, 24) == reference_ids(tiny_engine.model, ids, 24)


def test_batched_rows_of_different_lengths_equal_their_own_generate(tiny_engine):
    prompts = [prompt_ids(tiny_engine, text) for text in PROMPTS]

    async def run_all() -> list[list[int]]:
        async def one(i: int, ids: list[int]) -> list[int]:
            out: list[int] = []
            request = GenerationRequest(f"b{i}", ids, SamplingParams(max_tokens=12 + 4 * i))
            async for output in tiny_engine.generator.generate(request):
                out += output.token_ids
            return out

        return await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts)))

    results = tiny_engine.run(run_all())
    for i, (ids, got) in enumerate(zip(prompts, results, strict=True)):
        assert got == reference_ids(tiny_engine.model, ids, 12 + 4 * i), PROMPTS[i]


def test_requests_join_a_running_batch_between_steps(tiny_engine):
    from swift.infer.protocol import RequestConfig

    generator = tiny_engine.generator
    steps_before = generator.steps
    long = tiny_engine.submit({"messages": [{"role": "user", "content": PROMPTS[3]}]},
                              RequestConfig(temperature=0, max_tokens=120))
    deadline = time.monotonic() + 30
    while generator.steps < steps_before + 5:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    late = [tiny_engine.submit({"messages": [{"role": "user", "content": text}]},
                               RequestConfig(temperature=0, max_tokens=8)) for text in PROMPTS[:3]]
    answers = [future.result(timeout=60) for future in late]
    assert not long.done()  # the late requests finished while the long one was still decoding
    assert long.result(timeout=120).usage.completion_tokens == 120
    assert generator.max_rows_seen >= 2
    for text, answer in zip(PROMPTS[:3], answers, strict=True):
        alone = tiny_engine.infer([{"messages": [{"role": "user", "content": text}]}],
                                  RequestConfig(temperature=0, max_tokens=8))[0]
        assert answer.choices[0].message.content == alone.choices[0].message.content


def test_max_batch_size_caps_the_rows_decoded_together(tiny_llama_dir):
    from swift.infer.engine import PtEngine
    from swift.infer.protocol import RequestConfig

    with PtEngine(str(tiny_llama_dir), max_batch_size=2) as engine:
        responses = engine.infer([{"messages": [{"role": "user", "content": t}]} for t in PROMPTS],
                                 RequestConfig(temperature=0, max_tokens=6))
        assert engine.generator.max_rows_seen == 2
    assert all(r.usage.completion_tokens == 6 for r in responses)


def test_closing_a_stream_aborts_its_generation(tiny_engine):
    from swift.infer.protocol import RequestConfig

    async def read_two_chunks() -> int:
        stream = tiny_engine.stream({"messages": [{"role": "user", "content": "Hello"}]},
                                    RequestConfig(temperature=0, max_tokens=400))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        return seen

    aborted = tiny_engine.generator.aborted
    assert tiny_engine.run(read_two_chunks()) == 3
    wait_for(lambda: tiny_engine.generator.aborted == aborted + 1, "the closed stream's request to be aborted")
    assert tiny_engine.generator.active == 0


def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(tiny_engine, monkeypatch, caplog):
    from swift.infer.protocol import RequestConfig

    generator = tiny_engine.generator
    real_forward = generator._forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(generator, "_forward", flaky)
    request = {"messages": [{"role": "user", "content": "Hello"}]}
    with pytest.raises(EngineError, match="boom") as caught:
        tiny_engine.infer([request], RequestConfig(temperature=0, max_tokens=5))
    # the bug keeps its traceback: chained for the caller, and logged once (by the engine thread)
    assert isinstance(caught.value.__cause__, RuntimeError)
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(logged) == 1
    assert "boom" in "".join(traceback.format_exception(*logged[0].exc_info))
    assert tiny_engine.infer([request], RequestConfig(temperature=0, max_tokens=5))[0].usage.completion_tokens == 5
