"""Build the mcore GPTModel of an HF llama-family config (local layer spec, or TransformerEngine's where installed)
and move whole-model weights in and out of one rank's piece."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from swift.core import ConfigError
from swift.megatron.convert import ModelShape, Stages, hf_to_mcore, pad_vocab, padded_vocab_size, shard

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parallel:
    """The parallel layout of a run (sizes) and where this rank sits in it."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    cp: int = 1
    sequence_parallel: bool = False
    stages: Stages = field(default_factory=Stages)  # --decoder_first/last_pipeline_num_layers (default: even)


def rope_settings(hf_config: Any) -> dict[str, Any]:
    """GPTModel's rotary arguments from an HF config (transformers 4's rope_theta/rope_scaling or 5's
    rope_parameters); scalings mcore cannot express are refused rather than silently changed."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = dict(getattr(hf_config, "rope_scaling", None) or {}) or params
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default")) or "default"
    if kind == "default":
        return {"rotary_base": float(theta), "rope_scaling": False}
    if kind == "llama3" and (scaling.get("low_freq_factor", 1), scaling.get("high_freq_factor", 4),
                             scaling.get("original_max_position_embeddings", 8192)) == (1, 4, 8192):
        return {"rotary_base": float(theta), "rope_scaling": True, "rope_scaling_factor": float(scaling["factor"])}
    raise ConfigError(f"--model: rope scaling {scaling} has no mcore equivalent here (default and Llama-3.1's do)")


def transformer_config(hf_config: Any, shape: ModelShape, parallel: Parallel, *, dtype: Any,
                       options: dict[str, Any] | None = None) -> Any:
    """mcore's TransformerConfig of the model and layout; `options` (swift.megatron.options.transformer_options)
    override the defaults. A combination megatron-core refuses is raised as a ConfigError with its reason."""
    import torch
    import torch.nn.functional as F

    from megatron.core.transformer import TransformerConfig

    if shape.num_heads % parallel.tp or shape.num_kv_heads % parallel.tp:
        raise ConfigError(f"--tensor_model_parallel_size {parallel.tp} must divide the attention heads "
                          f"({shape.num_heads}) and KV heads ({shape.num_kv_heads})")
    options = dict(options or {})
    Stages(options.get("num_layers_in_first_pipeline_stage"),
           options.get("num_layers_in_last_pipeline_stage")).sizes(shape.num_layers, parallel.pp)
    if shape.num_experts and shape.num_experts % parallel.ep:
        raise ConfigError(f"--expert_model_parallel_size {parallel.ep} must divide the experts ({shape.num_experts})")
    cpu = not torch.cuda.is_available()
    moe = {}
    if shape.num_experts:
        moe = dict(num_moe_experts=shape.num_experts, moe_ffn_hidden_size=shape.moe_ffn_hidden_size,
                   moe_router_topk=shape.moe_topk, moe_router_load_balancing_type="none", moe_aux_loss_coeff=0.0,
                   moe_router_pre_softmax=not getattr(hf_config, "norm_topk_prob", True),
                   moe_token_dispatcher_type="alltoall" if parallel.ep > 1 else "allgather",
                   moe_router_dtype="fp32", moe_grouped_gemm=False)
    defaults = dict(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads, kv_channels=shape.head_dim, ffn_hidden_size=shape.ffn_hidden_size,
        normalization="RMSNorm", layernorm_epsilon=float(hf_config.rms_norm_eps), gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, add_qkv_bias=shape.qkv_bias, qk_layernorm=shape.qk_norm,
        hidden_dropout=0.0, attention_dropout=float(getattr(hf_config, "attention_dropout", 0.0) or 0.0),
        init_method_std=float(getattr(hf_config, "initializer_range", 0.02)),
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, params_dtype=dtype, pipeline_dtype=dtype, bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp, context_parallel_size=parallel.cp,
        expert_model_parallel_size=parallel.ep, expert_tensor_parallel_size=1,
        sequence_parallel=parallel.sequence_parallel and parallel.tp > 1,
        use_cpu_initialization=cpu, perform_initialization=False, calculate_per_token_loss=True,
        variable_seq_lengths=False, batch_p2p_sync=not cpu, deallocate_pipeline_outputs=False, **moe)
    try:
        return TransformerConfig(**(defaults | options))
    except (ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"megatron-core refuses these options: {e}") from None


def layer_spec(shape: ModelShape, *, use_te: bool) -> Any:
    if use_te:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(num_experts=shape.num_experts or None,
                                                          moe_grouped_gemm=False, qk_layernorm=shape.qk_norm)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(num_experts=shape.num_experts or None, moe_grouped_gemm=False,
                                    qk_layernorm=shape.qk_norm, normalization="RMSNorm")


def has_transformer_engine() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def build_gpt(hf_config: Any, shape: ModelShape, config: Any, *, tp: int, use_te: bool | None = None) -> Any:
    """This rank's GPTModel piece (pre/post-process by pipeline stage)."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    use_te = has_transformer_engine() if use_te is None else use_te
    model = GPTModel(
        config=config, transformer_layer_spec=layer_spec(shape, use_te=use_te),
        vocab_size=padded_vocab_size(shape.vocab_size, tp),
        max_sequence_length=int(getattr(hf_config, "max_position_embeddings", 4096)),
        pre_process=parallel_state.is_pipeline_first_stage(), post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True, share_embeddings_and_output_weights=shape.tied, position_embedding_type="rope",
        rotary_percent=1.0, **rope_settings(hf_config))
    mark_tensor_parallel(model)
    return model


def mark_tensor_parallel(model: Any) -> None:
    """Tag the split weights as TP-parallel. mcore sets these attributes only inside its weight initialisation,
    which we skip (`perform_initialization=False`: the weights are loaded anyway); untagged, TP rank 1's shards
    would be left out of the gradient norm (clipping and the logged norm would differ from TP=1)."""
    import torch

    from megatron.core.tensor_parallel import (
        ColumnParallelLinear,
        RowParallelLinear,
        VocabParallelEmbedding,
        set_tensor_model_parallel_attributes,
    )

    for module in model.modules():
        if isinstance(module, ColumnParallelLinear | VocabParallelEmbedding):
            dims = {"weight": 0, "bias": 0}
        elif isinstance(module, RowParallelLinear):
            dims = {"weight": 1}  # a row-parallel bias is whole on every rank
        else:
            continue
        for name, dim in dims.items():
            param = getattr(module, name, None)
            if isinstance(param, torch.nn.Parameter) and not getattr(param, "tensor_model_parallel", False):
                set_tensor_model_parallel_attributes(param, True, dim, 1)


def rank_position() -> dict[str, int]:
    from megatron.core import parallel_state as ps

    return {"tp_rank": ps.get_tensor_model_parallel_rank(), "pp_rank": ps.get_pipeline_model_parallel_rank(),
            "ep_rank": ps.get_expert_model_parallel_rank()}


def load_local(model: Any, local: dict, *, allow_missing: tuple[str, ...] = ()) -> None:
    """Copy one rank's piece into its module; any missing or surplus tensor is an error (the mapping is exact)."""
    mine = {k for k in model.state_dict() if not k.endswith("_extra_state")}
    missing = sorted(k for k in mine - set(local) if not any(s in k for s in allow_missing))
    surplus = sorted(set(local) - mine)
    if missing or surplus:
        raise ConfigError(f"mcore weights do not fit the model: missing {missing[:4]}, unexpected {surplus[:4]}")
    model.load_state_dict(local, strict=False)


def load_hf_into(model: Any, hf_state: dict, shape: ModelShape, parallel: Parallel) -> None:
    """Whole HF weights -> this rank's mcore piece, loaded into `model`."""
    full = pad_vocab(hf_to_mcore(hf_state, shape), padded_vocab_size(shape.vocab_size, parallel.tp),
                     head=bool(shape.head))
    load_local(model, shard(full, shape, tp=parallel.tp, pp=parallel.pp, ep=parallel.ep,
                            stages=parallel.stages, **rank_position()),
               allow_missing=(".lora_",))
