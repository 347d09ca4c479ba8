"""PtEngine through its chat API: sampling settings, stop words, logprobs, JSON mode, LoRA adapters per request,
and the packaged SmolLM2 answering for real."""

from __future__ import annotations

import json

import pytest
import torch

from swift.infer.engine.errors import RequestError, UnknownAdapterError
from swift.infer.engine.pt.json_mode import JsonState
from swift.infer.protocol import RequestConfig
from tests.conftest import SMOLLM2

HELLO = {"messages": [{"role": "user", "content": "Hello there"}]}


def content(engine, config: RequestConfig, request: dict = HELLO, **kwargs) -> str:
    return engine.infer([request], config, **kwargs)[0].choices[0].message.content


def test_a_seed_makes_sampling_repeatable(tiny_engine):
    config = RequestConfig(temperature=1.0, max_tokens=16, seed=7)
    first = content(tiny_engine, config)
    assert content(tiny_engine, config) == first
    others = {content(tiny_engine, config.model_copy(update={"seed": seed})) for seed in (8, 9, 10)}
    assert others != {first}


def tokens(engine, config: RequestConfig, request: dict = HELLO) -> list[str]:
    config = config.model_copy(update={"logprobs": True})
    return [t.token for t in engine.infer([request], config)[0].choices[0].logprobs.content]


def test_top_k_1_and_a_tiny_top_p_sample_the_greedy_answer(tiny_engine):
    penalty = {"frequency_penalty": 2.0, "max_tokens": 16}  # the tiny model alone repeats one token
    greedy = tokens(tiny_engine, RequestConfig(temperature=0, **penalty))
    assert len(set(greedy)) > 4
    assert tokens(tiny_engine, RequestConfig(temperature=1.5, top_k=1, **penalty)) == greedy
    assert tokens(tiny_engine, RequestConfig(temperature=1.5, top_p=1e-6, **penalty)) == greedy


def test_repetition_penalty_changes_the_greedy_answer(tiny_engine):
    plain = content(tiny_engine, RequestConfig(temperature=0, max_tokens=32))
    assert content(tiny_engine, RequestConfig(temperature=0, max_tokens=32, repetition_penalty=5.0)) != plain


def test_n_choices_and_usage(tiny_engine):
    response = tiny_engine.infer([HELLO], RequestConfig(temperature=1.0, max_tokens=8, n=3, seed=1))[0]
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert response.usage.completion_tokens == 24
    assert response.usage.total_tokens == response.usage.prompt_tokens + 24
    assert len({c.message.content for c in response.choices}) > 1


def test_max_tokens_ends_with_length(tiny_engine):
    response = tiny_engine.infer([HELLO], RequestConfig(temperature=0, max_tokens=5))[0]
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_a_stop_string_cuts_the_answer_before_it(tiny_engine):
    config = RequestConfig(temperature=1.0, seed=0, max_tokens=24)
    full = content(tiny_engine, config)
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip()
    response = tiny_engine.infer([HELLO], config.model_copy(update={"stop": [stop]}))[0]
    assert response.choices[0].finish_reason == "stop"
    assert stop not in response.choices[0].message.content
    assert full.startswith(response.choices[0].message.content)


def test_logprobs_are_the_models_and_the_greedy_token_is_the_best(tiny_engine):
    response = tiny_engine.infer([HELLO], RequestConfig(temperature=0, max_tokens=6, logprobs=True, top_logprobs=3))[0]
    tokens = response.choices[0].logprobs.content
    assert len(tokens) == 6
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert token.token == token.top_logprobs[0].token


def test_json_mode_answers_one_json_object(tiny_engine):
    answer = content(tiny_engine, RequestConfig(temperature=0, max_tokens=80, response_format={"type": "json_object"}))
    assert answer.startswith("{")
    assert JsonState().feed(answer)  # a valid JSON object prefix (a random model may run out of tokens)


@pytest.mark.parametrize(("text", "valid", "done"), [
    ('{"a": [1, -2.5e3, true, null, {"b": "x\\n\\u00e9"}]}', True, True),
    ('  {"a" :1 }', True, True),
    ('{"a": 01}', False, False),
    ("[1]", False, False),
    ('{"a": tru', True, False),
    ('{"a": "line\nbreak"}', False, False),
    ('{"a": 1} x', False, True),
    ('{"a": 1,}', False, False),
])
def test_json_state_accepts_json_object_prefixes_only(text, valid, done):
    state = JsonState()
    assert state.feed(text) is valid
    if valid:
        assert state.done is done


def test_a_prompt_longer_than_the_model_takes_is_a_request_error(tiny_engine):
    with pytest.raises(RequestError, match="at most 512 tokens"):
        tiny_engine.infer([{"messages": [{"role": "user", "content": "word " * 600}]}], RequestConfig(max_tokens=4))


def test_adapters_are_chosen_per_request_and_batch_together(tiny_llama_dir, adapter_dirs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from swift.infer.engine import PtEngine

    a, b = adapter_dirs
    config = RequestConfig(temperature=0, max_tokens=10)
    with PtEngine(str(tiny_llama_dir), adapters={"a": a, "b": b}) as engine:
        request = {"messages": [{"role": "user", "content": "Which adapter is this?"}]}

        async def all_three() -> list[str]:
            import asyncio

            replies = await asyncio.gather(*(engine.infer_async(request, config, adapter=name) for name in
                                             ("a", "b", engine.model_name)))
            return [r.choices[0].message.content for r in replies]

        together = engine.run(all_three())
        alone = [content(engine, config, request, adapter=name) for name in ("a", "b", engine.model_name)]
        assert engine.generator.max_rows_seen >= 3
        ids = engine.template.encode(request)["input_ids"]
        with pytest.raises(UnknownAdapterError, match="'c'"):
            engine.infer([request], config, adapter="c")
    assert together == alone
    assert len(set(together)) == 3  # base, a and b answer differently
    for name, path, text in (("a", a, together[0]), ("b", b, together[1])):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), path)
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False)
        assert engine.tokenizer.decode(out[0, len(ids):]).strip() == text, name


@pytest.fixture(scope="module")
def smollm2_engine():
    from swift.infer.engine import PtEngine

    engine = PtEngine(SMOLLM2)
    yield engine
    engine.close()


def test_smollm2_knows_the_capital_of_france(smollm2_engine):
    response = smollm2_engine.infer([{"messages": [{"role": "user", "content": "What is the capital of France?"}]}],
                                    RequestConfig(temperature=0, max_tokens=24))[0]
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"


def test_smollm2_stream_equals_the_whole_answer(smollm2_engine):
    request = {"messages": [{"role": "user", "content": "List three colours."}]}
    config = RequestConfig(temperature=0, max_tokens=24)
    whole = smollm2_engine.infer([request], config)[0].choices[0].message.content

    async def streamed() -> str:
        return "".join([chunk.choices[0].delta.content or "" async for chunk in
                        smollm2_engine.stream(request, config) if chunk.choices])

    assert smollm2_engine.run(streamed()) == whole
    json.dumps(whole)  # plain text, serialisable
