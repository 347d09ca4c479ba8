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
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from swift.infer.engine.external import ExternalEngine
from swift.infer.engine.types import GenerationOutput, GenerationRequest, SamplingParams, TokenLogprobInfo

logger = logging.getLogger(__name__)


class LmdeployBackend:
    """LMDeploy's `AsyncEngine` (PyTorch backend) as a `LoopBackend`."""

    def __init__(self, model_dir: str, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        from lmdeploy import PytorchEngineConfig

        try:
            from lmdeploy.serve.core.async_engine import AsyncEngine
        except ImportError:  # before the serve/core split
            from lmdeploy.serve.async_engine import AsyncEngine

        config = PytorchEngineConfig(adapters={k: str(v) for k, v in adapters.items()} or None, **engine_kwargs)
        self._make = functools.partial(AsyncEngine, model_dir, backend="pytorch", backend_config=config)
        self.adapters = tuple(adapters)
        self.max_model_len: int | None = None
        self._engine: Any = None
        self._sessions = itertools.count(1)

    def start(self) -> None:
        self._engine = self._make()
        start_loop = getattr(self._engine, "start_loop", None)
        if start_loop is not None:
            start_loop(asyncio.get_running_loop(), use_async_api=True)
        self.max_model_len = getattr(self._engine, "session_len", None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
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

    def shutdown(self) -> None:
        self._engine.close()


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


class LmdeployEngine(ExternalEngine):
    """LMDeploy behind the chat API (see `ExternalEngine`). `engine_kwargs`: `PytorchEngineConfig` fields (tp,
    session_len, cache_max_entry_count, ...)."""

    module, extra, backend_class = "lmdeploy", "swift-infer[lmdeploy]", LmdeployBackend
