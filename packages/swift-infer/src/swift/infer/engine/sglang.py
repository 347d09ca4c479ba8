"""`SglangEngine`: the chat API over SGLang's offline `Engine` (extra `swift-infer[sglang]`, CUDA, Python < 3.14).

Written against SGLang 0.5.20 (the version the lock resolves): `Engine(model_path=..., enable_lora=True,
lora_paths=["name=path"])`, `await engine.async_generate(input_ids=..., sampling_params={...}, stream=True,
lora_path=name, return_logprob=..., top_logprobs_num=..., rid=...)` yielding dicts with `text` (cumulative unless
`incremental_streaming_output`) and `meta_info` (finish_reason, completion_tokens, output_token_logprobs,
output_top_logprobs). JSON mode is `json_schema={"type": "object"}`. Not run in CI: its tests are marked `gpu`.
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


class SglangBackend:
    """SGLang's offline `Engine` as a `LoopBackend`."""

    def __init__(self, model_dir: str, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        import sglang

        if adapters:
            engine_kwargs = {"enable_lora": True, "lora_paths": [f"{name}={path}" for name, path in adapters.items()],
                             "max_loras_per_batch": len(adapters), **engine_kwargs}
        self._make = functools.partial(sglang.Engine, model_path=model_dir, **engine_kwargs)
        self._context_length = engine_kwargs.get("context_length")
        self.adapters = tuple(adapters)
        self.max_model_len: int | None = None
        self._engine: Any = None
        self._incremental = False

    def start(self) -> None:
        self._engine = self._make()
        server_args = getattr(self._engine, "server_args", None)
        self._incremental = bool(getattr(server_args, "incremental_streaming_output", False)
                                 or getattr(server_args, "stream_output", False))
        self.max_model_len = self._context_length or getattr(
            getattr(self._engine, "tokenizer_manager", None), "context_len", None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        params = request.params
        stream = await self._engine.async_generate(
            input_ids=request.prompt_ids, sampling_params=sampling_params(params), stream=True,
            lora_path=request.adapter, return_logprob=params.logprobs,
            top_logprobs_num=params.top_logprobs or None, rid=request.request_id)
        text_so_far, logprobs_seen, finished = "", 0, False
        try:
            async for chunk in stream:
                text, meta = chunk.get("text", ""), chunk.get("meta_info", {})
                delta = text if self._incremental else text[len(text_so_far):]
                text_so_far = text_so_far + text if self._incremental else text
                reason = meta.get("finish_reason")
                reason = reason.get("type") if isinstance(reason, dict) else reason
                finished = reason is not None
                infos = None
                if params.logprobs:
                    infos = _logprobs(meta, logprobs_seen, params.top_logprobs)
                    logprobs_seen += len(infos)
                yield GenerationOutput(delta, [], len(request.prompt_ids), int(meta.get("completion_tokens", 0)),
                                       ("length" if reason == "length" else "abort" if reason == "abort" else "stop")
                                       if finished else None, infos)
        finally:
            if not finished:  # cancelled by our consumer: stop the request in SGLang too
                abort = getattr(getattr(self._engine, "tokenizer_manager", None), "abort_request", None)
                if abort is not None:
                    abort(request.request_id)

    def shutdown(self) -> None:
        self._engine.shutdown()


def sampling_params(params: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_new_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1, "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "stop": list(params.stop) or None, "stop_token_ids": list(params.stop_token_ids) or None,
        "skip_special_tokens": False}
    if params.seed is not None:
        out["sampling_seed"] = params.seed
    if params.json_mode:
        out["json_schema"] = json.dumps({"type": "object"})
    return out


def _logprobs(meta: dict[str, Any], seen: int, top: int) -> list[TokenLogprobInfo]:
    """New entries of SGLang's cumulative `output_token_logprobs` [(logprob, id, text)] and their alternatives."""
    chosen = meta.get("output_token_logprobs") or []
    alternatives = meta.get("output_top_logprobs") or []
    out = []
    for index in range(seen, len(chosen)):
        logprob, token_id = chosen[index][0], chosen[index][1]
        options = alternatives[index] if index < len(alternatives) and alternatives[index] else []
        out.append(TokenLogprobInfo(token_id, logprob, [(o[1], o[0]) for o in options][:top]))
    return out


class SglangEngine(ExternalEngine):
    """SGLang behind the chat API (see `ExternalEngine`). `engine_kwargs`: SGLang `ServerArgs` fields (tp_size,
    mem_fraction_static, context_length, ...)."""

    module, extra, backend_class = "sglang", "swift-infer[sglang]", SglangBackend
