"""`LmdeployEngine`: the chat API over LMDeploy's PyTorch-backend `AsyncEngine` (extra `swift-infer[lmdeploy]`,
x86_64 + CUDA, a serving-only environment because of its peft pin).

Written against LMDeploy 0.18 (the version the lock resolves): `AsyncEngine(model_path, backend="pytorch",
backend_config=PytorchEngineConfig(adapters={name: path}, ...))`, `start_loop(loop, use_async_api=True)`, and
`generate(messages=None, session_id=..., gen_config=GenerationConfig(...), stream_response=True,
do_preprocess=False, adapter_name=..., input_ids=...)` yielding `GenOut` (delta `response`, cumulative
`generate_token_len`, `finish_reason`, delta `token_ids`, `logprobs` as [{id: logprob}]). LMDeploy has no presence /
frequency penalties: requests asking for them are answered without. Not run in CI: its tests are marked `gpu`.
"""

from __future__ import annotations

import asyncio
import itertools
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


class LmdeployGenerator:
    def __init__(self, model_dir: str, *, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        require_backend("lmdeploy", extra="swift-infer[lmdeploy]")
        from lmdeploy import PytorchEngineConfig

        try:
            from lmdeploy.serve.core.async_engine import AsyncEngine
        except ImportError:  # before the serve/core split
            from lmdeploy.serve.async_engine import AsyncEngine

        config = PytorchEngineConfig(adapters={k: str(v) for k, v in adapters.items()} or None, **engine_kwargs)

        def build() -> Any:
            engine = AsyncEngine(model_dir, backend="pytorch", backend_config=config)
            start_loop = getattr(engine, "start_loop", None)
            if start_loop is not None:
                start_loop(asyncio.get_running_loop(), use_async_api=True)
            return engine

        self._bridge = LoopBridge("swift-lmdeploy")
        self._engine = self._bridge.call(build)
        self._adapters = tuple(adapters)
        self._sessions = itertools.count(1)
        self._max_model_len = getattr(self._engine, "session_len", None)

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
        async for out in self._engine.generate(
                messages=None, session_id=next(self._sessions), gen_config=generation_config(params),
                stream_response=True, sequence_start=True, sequence_end=True, do_preprocess=False,
                adapter_name=request.adapter, input_ids=list(request.prompt_ids)):
            if out.finish_reason == "error":
                raise RuntimeError(f"LMDeploy: {out.response}")
            finish = {"length": "length", "abort": "abort"}.get(out.finish_reason or "", "stop")
            token_ids = list(out.token_ids or [])
            infos = None
            if params.logprobs and out.logprobs:
                infos = [_logprob(token_id, candidates, params.top_logprobs)
                         for token_id, candidates in zip(token_ids, out.logprobs, strict=False)]
            yield GenerationOutput(out.response or "", token_ids, len(request.prompt_ids), out.generate_token_len,
                                   finish if out.finish_reason else None, infos)

    def close(self) -> None:
        self._bridge.call(self._engine.close)
        self._bridge.close()


def generation_config(params: SamplingParams) -> Any:
    from lmdeploy import GenerationConfig

    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": 1 if params.is_greedy else max(params.top_k, 0), "repetition_penalty": params.repetition_penalty,
        "random_seed": params.seed, "stop_words": list(params.stop) or None,
        "stop_token_ids": list(params.stop_token_ids) or None, "skip_special_tokens": False,
        "logprobs": params.top_logprobs if params.logprobs else None}
    if params.json_mode:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {"name": "object",
                                                                            "schema": {"type": "object"}}}
    return GenerationConfig(**kwargs)


def _logprob(token_id: int, candidates: dict[int, float], top: int) -> TokenLogprobInfo:
    ranked = sorted(candidates.items(), key=lambda item: -item[1])
    return TokenLogprobInfo(token_id, candidates.get(token_id, ranked[0][1] if ranked else 0.0), ranked[:top])


class LmdeployEngine(InferEngine):
    """LMDeploy behind the chat API: our template renders the prompt ids, LMDeploy generates, our parser reads."""

    def __init__(self, model: str, *, template: Any = None, adapters: Mapping[str, str | Path] | None = None,
                 default_adapter: str | None = None, default_config: RequestConfig | None = None,
                 model_name: str | None = None, engine_kwargs: dict[str, Any] | None = None) -> None:
        """`engine_kwargs`: `PytorchEngineConfig` fields (tp, session_len, cache_max_entry_count, ...)."""
        from swift.core import get_template

        require_backend("lmdeploy", extra="swift-infer[lmdeploy]")  # before anything loads
        tokenizer, model_dir = load_tokenizer(model)
        generator = LmdeployGenerator(model_dir, adapters=adapters or {}, engine_kwargs=dict(engine_kwargs or {}))
        if template is None or isinstance(template, str):
            template = get_template(template, tokenizer)
        super().__init__(generator, template, model_name=model_name or model, default_adapter=default_adapter,
                         default_config=default_config, generation_config=read_generation_config(model_dir))

    @classmethod
    def from_spec(cls, spec: ServeSpec, args: InferArguments, *, model_name: str | None = None) -> LmdeployEngine:
        require_backend("lmdeploy", extra="swift-infer[lmdeploy]")
        check_spec(spec, "lmdeploy")
        _, _, template, config = engine_setup(spec, args)
        engine_kwargs: dict[str, Any] = {"tp": args.infer.tensor_parallel_size,
                                         "cache_max_entry_count": args.infer.gpu_memory_utilization,
                                         "max_batch_size": args.infer.max_batch_size}
        if args.infer.max_model_len:
            engine_kwargs["session_len"] = args.infer.max_model_len
        return cls(spec.model, template=template, adapters=spec.adapters, default_adapter=spec.default_adapter,
                   default_config=config, model_name=model_name or spec.model, engine_kwargs=engine_kwargs)
