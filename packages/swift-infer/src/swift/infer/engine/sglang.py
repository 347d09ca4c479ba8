"""`SglangEngine`: the chat API over SGLang's offline `Engine` (extra `swift-infer[sglang]`, CUDA, Python < 3.14).

Written against SGLang 0.5.20 (the version the lock resolves): `Engine(model_path=..., enable_lora=True,
lora_paths=["name=path"])`, `await engine.async_generate(input_ids=..., sampling_params={...}, stream=True,
lora_path=name, return_logprob=..., top_logprobs_num=..., rid=...)` yielding dicts with `text` (cumulative unless
`incremental_streaming_output`) and `meta_info` (finish_reason, completion_tokens, output_token_logprobs,
output_top_logprobs). JSON mode is `json_schema={"type": "object"}`. Not run in CI: its tests are marked `gpu`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift.core.errors import require_backend
from swift.infer.engine.engine import InferEngine
from swift.infer.engine.external import check_spec, engine_setup, load_tokenizer, read_generation_config
from swift.infer.engine.loop import LoopBridge
from swift.infer.engine.types import GenerationOutput, GenerationRequest, SamplingParams, TokenLogprobInfo
from swift.infer.protocol import RequestConfig

if TYPE_CHECKING:
    from swift.infer.arguments import InferArguments
    from swift.infer.checkpoint import ServeSpec

logger = logging.getLogger(__name__)


class SglangGenerator:
    def __init__(self, model_dir: str, *, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        sglang = require_backend("sglang", extra="swift-infer[sglang]")
        if adapters:
            engine_kwargs = {"enable_lora": True, "lora_paths": [f"{name}={path}" for name, path in adapters.items()],
                             "max_loras_per_batch": len(adapters), **engine_kwargs}
        self._bridge = LoopBridge("swift-sglang")
        self._engine = self._bridge.call(lambda: sglang.Engine(model_path=model_dir, **engine_kwargs))
        self._adapters = tuple(adapters)
        server_args = getattr(self._engine, "server_args", None)
        self._incremental = bool(getattr(server_args, "incremental_streaming_output", False)
                                 or getattr(server_args, "stream_output", False))
        self._max_model_len = engine_kwargs.get("context_length") or getattr(
            getattr(self._engine, "tokenizer_manager", None), "context_len", None)

    @property
    def adapters(self) -> Sequence[str]:
        return self._adapters

    @property
    def max_model_len(self) -> int | None:
        return self._max_model_len

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        return self._bridge.stream(lambda: self._generate(request))

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
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

    def close(self) -> None:
        self._bridge.call(self._engine.shutdown)
        self._bridge.close()


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


class SglangEngine(InferEngine):
    """SGLang behind the chat API: our template renders the prompt ids, SGLang generates, our parser reads answers."""

    def __init__(self, model: str, *, template: Any = None, adapters: Mapping[str, str | Path] | None = None,
                 default_adapter: str | None = None, default_config: RequestConfig | None = None,
                 model_name: str | None = None, engine_kwargs: dict[str, Any] | None = None) -> None:
        """`engine_kwargs`: SGLang `ServerArgs` fields (tp_size, mem_fraction_static, context_length, ...)."""
        from swift.core import get_template

        require_backend("sglang", extra="swift-infer[sglang]")  # before anything loads
        engine_kwargs = dict(engine_kwargs or {})
        tokenizer, model_dir = load_tokenizer(model, trust_remote_code=bool(engine_kwargs.get("trust_remote_code")))
        generator = SglangGenerator(model_dir, adapters=adapters or {}, engine_kwargs=engine_kwargs)
        if template is None or isinstance(template, str):
            template = get_template(template, tokenizer)
        super().__init__(generator, template, model_name=model_name or model, default_adapter=default_adapter,
                         default_config=default_config, generation_config=read_generation_config(model_dir))

    @classmethod
    def from_spec(cls, spec: ServeSpec, args: InferArguments, *, model_name: str | None = None) -> SglangEngine:
        require_backend("sglang", extra="swift-infer[sglang]")
        check_spec(spec, "sglang")
        _, _, template, config = engine_setup(spec, args)
        engine_kwargs = {"tp_size": args.infer.tensor_parallel_size,
                         "mem_fraction_static": args.infer.gpu_memory_utilization,
                         "context_length": args.infer.max_model_len, "dtype": args.model.torch_dtype or "auto",
                         "trust_remote_code": args.model.trust_remote_code,
                         "max_running_requests": args.infer.max_batch_size}
        return cls(spec.model, template=template, adapters=spec.adapters, default_adapter=spec.default_adapter,
                   default_config=config, model_name=model_name or spec.model, engine_kwargs=engine_kwargs)
