"""vLLM, SGLang and LMDeploy engines. Without the backend installed (CI, CPU machines) they say which extra to
install; with it, the `gpu` tests run them on the packaged SmolLM2 (none has run here: no GPU in CI)."""

from __future__ import annotations

import importlib.util

import pytest

from swift.core.arguments import parse_args
from swift.core.errors import MissingBackendError
from swift.infer.arguments import InferArguments
from swift.infer.protocol import RequestConfig
from tests.conftest import SMOLLM2

BACKENDS = {"vllm": "VllmEngine", "sglang": "SglangEngine", "lmdeploy": "LmdeployEngine"}
PARIS = [{"messages": [{"role": "user", "content": "What is the capital of France?"}]}]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_missing_backend_names_its_extra(backend):
    if importlib.util.find_spec(backend) is not None:
        pytest.skip(f"{backend} is installed here")
    from swift.infer.build import build_engine

    args = parse_args(InferArguments, ["--model", SMOLLM2, "--infer_backend", backend], prog="swift infer")
    with pytest.raises(MissingBackendError, match=rf"swift-infer\[{backend}\]"):
        build_engine(args)


def external_engine(backend: str, **kwargs):
    pytest.importorskip(backend)
    import swift.infer.engine as engines

    return getattr(engines, BACKENDS[backend])(SMOLLM2, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backend_answers_and_streams_like_the_whole_answer(backend):
    with external_engine(backend) as engine:
        config = RequestConfig(temperature=0, max_tokens=24)
        whole = engine.infer(PARIS, config)[0].choices[0].message.content
        assert "Paris" in whole

        async def streamed() -> str:
            return "".join([c.choices[0].delta.content or "" async for c in engine.stream(PARIS[0], config)
                            if c.choices])

        assert engine.run(streamed()) == whole
        lp = engine.infer(PARIS, config.model_copy(update={"logprobs": True, "top_logprobs": 2}))[0]
        assert lp.choices[0].logprobs.content[0].top_logprobs


@pytest.mark.gpu
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backend_serves_a_lora_adapter_per_request(backend, tmp_path):
    from peft import LoraConfig, get_peft_model

    from swift.core import get_model_tokenizer

    model, _ = get_model_tokenizer(SMOLLM2)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "zero")  # B = 0: the adapter leaves answers as the base gives them
    with external_engine(backend, adapters={"zero": tmp_path / "zero"}) as engine:
        config = RequestConfig(temperature=0, max_tokens=16)
        base = engine.infer(PARIS, config)[0].choices[0].message.content
        assert engine.infer(PARIS, config, adapter="zero")[0].choices[0].message.content == base
