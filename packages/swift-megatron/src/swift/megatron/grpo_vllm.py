"""`megatron rlhf --rlhf_type grpo --use_vllm true`: rollouts on vLLM colocated with the trainer (ms-swift's
`--vllm_mode colocate`), one engine on each model-parallel group's first rank, built from the model's config with
dummy weights and fed the gathered policy (LoRA merged) through swift-infer's `VllmEngine.load_weights` before every
rollout batch. The only place swift-megatron uses swift-infer (its public `swift.infer.engine` names, imported when
`--use_vllm true` asks for it; `pip install 'swift-infer[vllm]'` brings them).

On a GPU `--sleep_level 1|2` puts the engine to sleep while the policy trains (level 2 discards its weights: the next
sync loads them again). On a CPU there is no sleep mode: the flags say so once and do nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


def engine_kwargs(rlhf: Any, *, max_length: int, max_positions: int | None, seed: int, dtype: Any) -> dict:
    """vLLM engine arguments of the --vllm_* flags; `dtype` is the policy's (vLLM's default on a CPU: see
    swift.core.env.vllm_cpu_dtype)."""
    import torch

    from swift.core import env

    limit = rlhf.vllm_max_model_len or max_length + rlhf.max_completion_length
    limit = min(limit, max_positions or limit)
    if not torch.cuda.is_available() and env.vllm_cpu_dtype():
        name = env.vllm_cpu_dtype()
    else:
        name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    kwargs = {"max_model_len": limit, "enforce_eager": rlhf.vllm_enforce_eager,
              "enable_prefix_caching": rlhf.vllm_enable_prefix_caching, "dtype": name, "seed": seed,
              "load_format": "dummy"}  # the weights come from the first sync
    if rlhf.vllm_gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = rlhf.vllm_gpu_memory_utilization
    if torch.cuda.is_available() and rlhf.sleep_level:
        kwargs["enable_sleep_mode"] = True
    return kwargs | dict(rlhf.vllm_engine_kwargs or {})


class VllmRollouts:
    """vLLM in this process, holding a copy of the policy."""

    def __init__(self, model_dir: str, template: Any, kwargs: dict, *, sleep_level: int) -> None:
        import torch

        from swift.infer.engine import VllmEngine

        self.engine = VllmEngine(model_dir, template=template, engine_kwargs=kwargs, use_async_engine=False)
        self.dtype = self.engine.backend.engine.model_config.dtype
        self.sleep_level = sleep_level if torch.cuda.is_available() else 0
        self.asleep = False

    def load(self, hf_state: dict) -> None:
        if self.asleep:
            self.engine.wake_up()
            self.asleep = False
        self.engine.load_weights((name, tensor.to(self.dtype)) for name, tensor in hf_state.items())

    def generate(self, prompts: list[list[int]], *, num_generations: int, max_tokens: int, temperature: float,
                 top_p: float, top_k: int, repetition_penalty: float, stop_token_ids: tuple[int, ...],
                 seed: int) -> list[list[int]]:
        """`num_generations` completions per prompt, consecutive; completion i of the call seeded `seed + i`."""
        from swift.infer.engine import GenerationRequest, SamplingParams

        expanded = [p for p in prompts for _ in range(num_generations)]
        requests = [GenerationRequest(f"grpo-{seed}-{i}", list(ids), SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=max(top_k, 0),
            repetition_penalty=repetition_penalty, stop_token_ids=tuple(stop_token_ids), seed=seed + i))
            for i, ids in enumerate(expanded)]

        async def collect(request: Any) -> list[int]:
            ids: list[int] = []
            async for output in self.engine.generator.generate(request):
                ids.extend(output.token_ids)
            return ids

        async def collect_all() -> list[list[int]]:
            return list(await asyncio.gather(*(collect(r) for r in requests)))

        completions = asyncio.run(collect_all())
        if self.sleep_level:
            self.engine.sleep(self.sleep_level)
            self.asleep = True
        return completions

    def close(self) -> None:
        self.engine.close()
