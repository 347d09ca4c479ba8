"""`VllmEngine`: the chat API over vLLM's `AsyncLLM` (extra `swift-infer[vllm]`, CUDA).

Written against vLLM 0.32 (the version the lock resolves): `AsyncLLM.generate(TokensPrompt, SamplingParams,
request_id, lora_request=...)` with `RequestOutputKind.DELTA`, `StructuredOutputsParams(json_object=True)` for JSON
mode (`GuidedDecodingParams` before 0.12), `LoRARequest(name, int_id, path)` per adapter. Closing a request's
iterator cancels `generate`, which aborts the request in vLLM. Not run in CI: its tests are marked `gpu`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping
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


class VllmBackend:
    """vLLM's `AsyncLLM` as a `LoopBackend`."""

    def __init__(self, model_dir: str, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest

        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # before the V1 engine
            from vllm import AsyncLLMEngine as AsyncLLM

        if adapters:
            engine_kwargs = {"enable_lora": True, "max_loras": len(adapters), "max_lora_rank": lora_rank(adapters),
                             **engine_kwargs}
        self._make = functools.partial(AsyncLLM.from_engine_args, AsyncEngineArgs(model=model_dir, **engine_kwargs))
        self._loras = {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}
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
            piece = output.outputs[0]
            token_ids = list(piece.token_ids)
            completion_tokens += len(token_ids)
            finish = _FINISH.get(piece.finish_reason or "", "stop") if output.finished else None
            yield GenerationOutput(piece.text, token_ids, len(request.prompt_ids), completion_tokens, finish,
                                   _logprobs(token_ids, piece.logprobs, request.params.top_logprobs)
                                   if request.params.logprobs else None)

    def shutdown(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


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
    """vLLM behind the chat API (see `ExternalEngine`). `engine_kwargs`: vLLM `AsyncEngineArgs` fields
    (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...)."""

    module, extra, backend_class = "vllm", "swift-infer[vllm]", VllmBackend
