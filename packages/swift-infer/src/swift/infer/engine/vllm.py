"""`VllmEngine`: the chat API over vLLM's `AsyncLLM` (extra `swift-infer[vllm]`, CUDA).

Written against vLLM 0.32 (the version the lock resolves): `AsyncLLM.generate(TokensPrompt, SamplingParams,
request_id, lora_request=...)` with `RequestOutputKind.DELTA`, `StructuredOutputsParams(json_object=True)` for JSON
mode (`GuidedDecodingParams` before 0.12), `LoRARequest(name, int_id, path)` per adapter. Closing a request's
iterator cancels `generate`, which aborts the request in vLLM. Not run in CI: its tests are marked `gpu`.
"""

from __future__ import annotations

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

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values


def lora_rank(adapters: Mapping[str, str | Path]) -> int:
    """The smallest rank vLLM allows that fits every adapter's `r`."""
    import json

    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 8) for p in adapters.values()]
    need = max(ranks, default=8)
    return next((r for r in _LORA_RANKS if r >= need), need)


class VllmGenerator:
    def __init__(self, model_dir: str, *, adapters: Mapping[str, str | Path], engine_kwargs: dict[str, Any]) -> None:
        require_backend("vllm", extra="swift-infer[vllm]")
        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest

        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # before the V1 engine
            from vllm import AsyncLLMEngine as AsyncLLM

        if adapters:
            engine_kwargs = {"enable_lora": True, "max_loras": len(adapters), "max_lora_rank": lora_rank(adapters),
                             **engine_kwargs}
        self._bridge = LoopBridge("swift-vllm")
        args = AsyncEngineArgs(model=model_dir, **engine_kwargs)
        self._engine = self._bridge.call(lambda: AsyncLLM.from_engine_args(args))
        self._loras = {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}
        self._max_model_len = getattr(getattr(self._engine, "model_config", None), "max_model_len", None)

    @property
    def adapters(self) -> Sequence[str]:
        return tuple(self._loras)

    @property
    def max_model_len(self) -> int | None:
        return self._max_model_len

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        return self._bridge.stream(lambda: self._generate(request))

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
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

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            self._bridge.call(shutdown)
        self._bridge.close()


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


class VllmEngine(InferEngine):
    """vLLM behind the chat API: our template renders the prompt ids, vLLM generates, our parser reads answers."""

    def __init__(self, model: str, *, template: Any = None, adapters: Mapping[str, str | Path] | None = None,
                 default_adapter: str | None = None, default_config: RequestConfig | None = None,
                 model_name: str | None = None, engine_kwargs: dict[str, Any] | None = None) -> None:
        """`engine_kwargs`: vLLM `AsyncEngineArgs` fields (tensor_parallel_size, gpu_memory_utilization, ...)."""
        from swift.core import get_template

        require_backend("vllm", extra="swift-infer[vllm]")  # before anything loads
        tokenizer, model_dir = load_tokenizer(model, trust_remote_code=bool((engine_kwargs or {}).get(
            "trust_remote_code")))
        generator = VllmGenerator(model_dir, adapters=adapters or {}, engine_kwargs=dict(engine_kwargs or {}))
        if template is None or isinstance(template, str):
            template = get_template(template, tokenizer)
        super().__init__(generator, template, model_name=model_name or model, default_adapter=default_adapter,
                         default_config=default_config, generation_config=read_generation_config(model_dir))

    @classmethod
    def from_spec(cls, spec: ServeSpec, args: InferArguments, *, model_name: str | None = None) -> VllmEngine:
        require_backend("vllm", extra="swift-infer[vllm]")
        check_spec(spec, "vllm")
        _, _, template, config = engine_setup(spec, args)
        engine_kwargs = {"tensor_parallel_size": args.infer.tensor_parallel_size,
                         "gpu_memory_utilization": args.infer.gpu_memory_utilization,
                         "max_model_len": args.infer.max_model_len, "dtype": args.model.torch_dtype or "auto",
                         "trust_remote_code": args.model.trust_remote_code, "max_num_seqs": args.infer.max_batch_size}
        return cls(spec.model, template=template, adapters=spec.adapters, default_adapter=spec.default_adapter,
                   default_config=config, model_name=model_name or spec.model, engine_kwargs=engine_kwargs)
