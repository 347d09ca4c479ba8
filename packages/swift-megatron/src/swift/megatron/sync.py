"""Weight sync mcore -> HF: the policy's pieces gathered over its tensor- and pipeline-parallel ranks, LoRA merged
(W + alpha/r * B A), converted to HF names by `convert.py` and copied into an HF model of the same checkpoint
(GRPO's rollout model, which generates with transformers' `generate`: swift.megatron may not import swift.infer).

Every rank of a model-parallel group (TP x PP) holds a different piece; data-parallel replicas hold the same ones,
so the gather runs inside each model-parallel group only. The pieces travel as CPU tensors (the whole model ends
up in host memory on the receiving ranks)."""

from __future__ import annotations

import logging
from typing import Any

from swift.core import ConfigError
from swift.megatron.convert import ModelShape, mcore_to_hf, merge
from swift.megatron.lora import LoraSpec, merge_lora_full
from swift.megatron.model import Parallel, rank_position

logger = logging.getLogger(__name__)


def _unwrap(model: Any) -> Any:
    """The GPTModel inside mcore's DistributedDataParallel (or the model itself)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def local_piece(model: Any) -> dict:
    """This rank's mcore state dict (stage-local layer numbers, TP shards, LoRA tensors), detached on the CPU."""
    return {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items() if not k.endswith("_extra_state")}


def gather_hf_state(model: Any, shape: ModelShape, parallel: Parallel, *, lora_spec: LoraSpec | None = None,
                    dst: int | None = None, fused_experts: bool = False) -> dict | None:
    """The whole HF state dict of `model` (a GPTModel piece, or mcore's DDP around one) on every rank of its
    model-parallel group, or only on global rank `dst` (the others get None). Collective: every rank of the
    group must call it. `lora_spec`: merge the adapter into the base weights (LoRA keys are dropped). With
    --overlap_param_gather, call it inside train.py's `_params_gathered` (the updated parameters are gathered by
    the next forward's hooks otherwise)."""
    import torch.distributed as dist

    from megatron.core import parallel_state as ps

    if parallel.ep > 1:
        raise ConfigError("weight sync with --expert_model_parallel_size > 1 is not built (experts live in the "
                          "expert-parallel groups); use --expert_model_parallel_size 1")
    if shape.head:
        raise ConfigError("weight sync to a causal LM: this model's output layer is a classification head")
    position = rank_position()
    mine = ((position["tp_rank"], position["pp_rank"], 0), local_piece(model))
    group = ps.get_model_parallel_group()  # TP x PP
    size = dist.get_world_size(group)
    if size == 1:  # the whole model is here: no pickled round trip (57 % of a GRPO step on the 135M model)
        gathered = [mine]
    elif dst is None:
        gathered: list = [None] * size
        dist.all_gather_object(gathered, mine, group=group)
    else:
        gathered = [None] * size if dist.get_rank() == dst else None
        dist.gather_object(mine, gathered, dst=dst, group=group)
    if dst is not None and dist.get_rank() != dst:
        return None
    pieces = dict(gathered)
    full = merge(pieces, shape, tp=parallel.tp, pp=parallel.pp, stages=parallel.stages)
    lora_keys = [k for k in full if ".lora_" in k]
    if lora_keys and lora_spec is None:
        raise ConfigError("the model carries LoRA adapters: pass lora_spec to merge them")
    if lora_spec is not None:
        full = merge_lora_full(full, lora_spec)
    return mcore_to_hf(full, shape, fused_experts=fused_experts)


def load_into_hf(hf_model: Any, hf_state: dict) -> None:
    """Copy converted weights into `hf_model` in place (its own dtype and device). Every parameter must be
    covered; a tied `lm_head.weight` is the embedding, so it may come either way."""
    import torch

    mine = dict(hf_model.state_dict())
    tied = getattr(hf_model.config, "tie_word_embeddings", False)
    missing = sorted(k for k in set(mine) - set(hf_state) if not (tied and k == "lm_head.weight"))
    surplus = sorted(k for k in set(hf_state) - set(mine))
    if missing or surplus:
        raise ConfigError(f"synced weights do not fit {type(hf_model).__name__}: missing {missing[:4]}, "
                          f"unexpected {surplus[:4]}")
    with torch.no_grad():
        for name, tensor in hf_state.items():
            target = mine[name]
            if target.shape != tensor.shape:
                raise ConfigError(f"synced weight {name} has shape {tuple(tensor.shape)}, the HF model's is "
                                  f"{tuple(target.shape)}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))


def has_fused_experts(hf_model: Any) -> bool:
    """Whether `hf_model` names its experts' weights fused (transformers 5's `mlp.experts.gate_up_proj`)."""
    return any(k.endswith("mlp.experts.gate_up_proj") for k in hf_model.state_dict())


def sync_to_hf(model: Any, hf_model: Any, shape: ModelShape, parallel: Parallel, *,
               lora_spec: LoraSpec | None = None, dst: int | None = None) -> None:
    """Gather `model`'s weights (see `gather_hf_state`) and load them into `hf_model`; with `dst`, only that rank's
    `hf_model` is updated (pass None as hf_model elsewhere)."""
    fused = has_fused_experts(hf_model) if hf_model is not None else False
    state = gather_hf_state(model, shape, parallel, lora_spec=lora_spec, dst=dst, fused_experts=fused)
    if state is not None:
        load_into_hf(hf_model, state)
