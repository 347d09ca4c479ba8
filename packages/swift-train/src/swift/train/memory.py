"""Two defaults that decide most of a CPU/GPU step's cost besides the matmuls themselves:

- **Frozen weights in bf16.** Under bf16 autocast every matmul casts its fp32 weight to bf16, and autocast caches that
  cast only for weights that require grad: the frozen base of a LoRA run is cast again in every forward and its
  backward (a quarter of a SmolLM2 LoRA step on this CPU went to `aten::copy_`). Frozen Linear weights are stored in
  bf16 once instead: the matmuls see exactly the operands autocast gave them, so losses and gradients are unchanged,
  and frozen weights take half the memory. Embeddings and norms keep their dtype (autocast runs those in fp32 and the
  residual stream stays fp32), as does an output head tied to the input embedding.
- **Gradient checkpointing when activations would not fit.** Recomputing activations costs a third more compute; it
  is only worth it when a step's activations would not fit. `--gradient_checkpointing` unset turns it on when the
  estimate for the longest micro-batch (batch x max_length tokens) exceeds half the memory free after the model has
  loaded (CUDA: the device's free memory; CPU: MemAvailable).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# Bytes of saved activations per token, per decoder layer, per unit of hidden width, without checkpointing: measured
# on SmolLM2-135M LoRA under bf16 autocast (peak RSS 4.79 GiB without, 3.33 GiB with checkpointing, ~800 tokens per
# step, 30 layers, hidden 576 -> ~110), rounded up for models with wider MLPs.
ACTIVATION_BYTES_PER_HIDDEN = 128


def cast_frozen_linears(model: Any, dtype: Any) -> int:
    """Store the weights of frozen fp32 Linear layers in `dtype` (not the input embedding, nor a head tied to it).
    Returns how many parameters were cast."""
    import torch

    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embedding.weight if embedding is not None else None
    cast = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if weight.requires_grad or weight.dtype != torch.float32 or weight is tied:
            continue
        weight.data = weight.data.to(dtype)
        cast += weight.numel()
        if module.bias is not None and not module.bias.requires_grad and module.bias.dtype == torch.float32:
            module.bias.data = module.bias.data.to(dtype)
    return cast


def frozen_weights_in_bf16(model: Any, *, bf16: bool, sharded: bool) -> None:
    """Apply `cast_frozen_linears` when training under bf16 autocast with a fixed set of trainable parameters (peft
    adapters) and no ZeRO / FSDP (which flatten parameters of one dtype)."""
    import torch
    from peft import PeftModel

    if not bf16 or sharded or not isinstance(model, PeftModel):
        return
    cast = cast_frozen_linears(model, torch.bfloat16)
    if cast:
        logger.info("bf16: %.1fM frozen weights stored in bf16 (autocast would cast them at every step)", cast / 1e6)


def activation_estimate(config: Any, tokens: int) -> int:
    """Bytes of activations one micro-batch of `tokens` keeps for the backward pass without checkpointing."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", 0) or 0
    layers = getattr(text, "num_hidden_layers", 0) or 0
    vocab = getattr(text, "vocab_size", 0) or 0
    return tokens * (layers * hidden * ACTIVATION_BYTES_PER_HIDDEN + vocab * 8)  # + fp32 logits and their grad


def free_memory() -> int | None:
    """Bytes free for activations: CUDA's free device memory, else the OS's MemAvailable."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def wants_checkpointing(requested: bool | None, config: Any, tokens: int) -> bool:
    """--gradient_checkpointing, or (unset) whether the activations of a `tokens` micro-batch exceed half the free
    memory; the decision and its numbers are logged."""
    if requested is not None:
        return requested
    need, free = activation_estimate(config, tokens), free_memory()
    if free is None:
        logger.info("gradient checkpointing: on (free memory unknown)")
        return True
    on = need > free // 2
    logger.info("gradient checkpointing: %s (activations of a %d-token micro-batch ~%.1f GiB, %.1f GiB free; on "
                "above half of it; --gradient_checkpointing true/false decides)", "on" if on else "off", tokens,
                need / 2**30, free / 2**30)
    return on


def vision_checkpointing(model: Any, enabled: bool, kwargs: dict | None = None) -> int:
    """Turn checkpointing of the vision tower's blocks on or off after the trainer set it for the whole model
    (--vit_gradient_checkpointing); returns how many blocks were set."""
    import functools

    import transformers.modeling_utils as modeling

    from swift.core import model_parts, part_of

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parts = model_parts(base)
    if parts is None:
        return 0
    checkpoint = functools.partial(modeling.checkpoint, **({"use_reentrant": False} | (kwargs or {})))
    count = 0
    for name, module in base.named_modules():
        if not hasattr(module, "gradient_checkpointing") or part_of(name, parts) != "vision":
            continue
        module.gradient_checkpointing = enabled
        if enabled:
            module._gradient_checkpointing_func = checkpoint
        count += 1
    return count
