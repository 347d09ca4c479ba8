"""GRPO rollouts on swift-infer's PyTorch engine (continuous batching on the policy being trained, in process).

Plugged into trl's `GRPOTrainer` as its `rollout_func`: prompts are rendered by our template, the policy generates
through `PtGenerator` (no weight copy: it is the same module, switched to inference for the rollout). Without
swift-infer installed, GRPO falls back to trl's own `model.generate` path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

logger = logging.getLogger(__name__)


def pt_engine_available() -> bool:
    try:
        from swift.infer.engine import PtGenerator  # noqa: F401
    except ImportError:
        return False
    return True


def stop_token_ids(template: Any, tokenizer: Any) -> tuple[int, ...]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for word in template.stop_words:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return tuple(sorted(ids))


class PtRollout:
    """`rollout_func(prompts, trainer)` for trl: one completion per (already repeated) prompt."""

    def __init__(self, template: Any, *, max_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 repetition_penalty: float = 1.0, seed: int = 42, max_batch_size: int = 64) -> None:
        self.template, self.max_batch_size, self.seed = template, max_batch_size, seed
        self.params = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                           repetition_penalty=repetition_penalty)
        self._counter = itertools.count()

    def __call__(self, prompts: list, trainer: Any) -> dict[str, Any]:
        from trl.models.utils import unwrap_model_for_generation

        from swift.infer.engine import GenerationRequest, PtGenerator, SamplingParams

        tokenizer = trainer.processing_class
        prompt_ids = [self.template.encode({"messages": prompt})["input_ids"] for prompt in prompts]
        stops = stop_token_ids(self.template, tokenizer)
        call = next(self._counter)
        requests = [
            GenerationRequest(f"rollout-{call}-{i}", ids,
                              SamplingParams(**self.params, stop_token_ids=stops, seed=self.seed + 7919 * call + i))
            for i, ids in enumerate(prompt_ids)]
        with unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            model.eval()
            use_cache = model.config.use_cache
            model.config.use_cache = True
            generator = PtGenerator(model, tokenizer, max_batch_size=self.max_batch_size)
            try:
                completions = asyncio.run(_collect_all(generator, requests))
            finally:
                generator.close()
                model.config.use_cache = use_cache
                model.train(was_training)
        return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None}


async def _collect_all(generator: Any, requests: list) -> list[list[int]]:
    async def collect(request: Any) -> list[int]:
        ids: list[int] = []
        async for output in generator.generate(request):
            ids.extend(output.token_ids)
        return ids

    return list(await asyncio.gather(*(collect(r) for r in requests)))
