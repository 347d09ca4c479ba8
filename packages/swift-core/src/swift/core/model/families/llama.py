"""Llama-architecture families that ship their own chat template."""

from swift.core.model.meta import ModelMeta
from swift.core.model.registry import register_model

register_model(ModelMeta(
    model_type="smollm2",
    hf_ids=tuple(f"HuggingFaceTB/SmolLM2-{size}-Instruct" for size in ("135M", "360M", "1.7B"))
    + tuple(f"HuggingFaceTB/SmolLM2-{size}" for size in ("135M", "360M", "1.7B")),
    architectures=("LlamaForCausalLM",),
    template="smollm2",
))
