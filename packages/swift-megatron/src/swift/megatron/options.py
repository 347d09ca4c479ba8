"""Megatron-Core's own switches (`--recompute_*`, fusions, `--moe_*`, `--fp8_*`, the precision-aware optimizer...):
one flag group, turned into TransformerConfig and OptimizerConfig keywords here.

An option whose effect needs hardware this process lacks (TransformerEngine, APEX's CUDA extensions, a GPU) is
left out of the config with ONE log line saying it does nothing on this device: never silently dropped. Options
that cannot work with the models megatron trains here are refused by `check_core_args` before anything loads.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Literal

from swift.core.arguments import arg

logger = logging.getLogger(__name__)

RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe", "shared_experts")
STATE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "uint8"}  # mcore stores fp8 as uint8


@dataclass
class MegatronCoreArgs:
    """Megatron-Core (TransformerConfig / OptimizerConfig)"""

    recompute_granularity: Literal["full", "selective"] | None = arg(None, "activation recompute")
    recompute_method: Literal["uniform", "block"] | None = arg(
        None, "with --recompute_granularity full: recompute uniform units of --recompute_num_layers, or the first "
        "--recompute_num_layers layers of each stage (block) (default uniform)")
    recompute_num_layers: int | None = arg(None, "with --recompute_granularity full: layers per unit (default 1)")
    recompute_modules: list[str] | None = arg(
        None, "with --recompute_granularity selective: parts to recompute (default core_attn)",
        choices=lambda: dict.fromkeys(RECOMPUTE_MODULES))
    cross_entropy_loss_fusion: bool = arg(False, "fused (vocab-parallel) cross-entropy")
    cross_entropy_fusion_impl: Literal["native", "te"] = arg("native", "fused cross-entropy kernel")
    masked_softmax_fusion: bool = arg(False, "fused scale + mask + softmax in attention (CUDA kernel)")
    gradient_accumulation_fusion: bool = arg(False, "accumulate weight gradients in the GEMM (APEX/TE CUDA extension)")
    attention_backend: Literal["auto", "flash", "fused", "unfused", "local"] = arg(
        "auto", "TransformerEngine attention backend (the local layer spec runs torch attention)")
    moe_aux_loss_coeff: float = arg(0.0, "MoE load-balancing auxiliary loss coefficient (0: none)")
    moe_router_dtype: Literal["none", "fp32", "fp64"] = arg(
        "fp32", "dtype of the MoE router's logits and softmax (none: the model's dtype)")
    moe_grouped_gemm: bool = arg(False, "MoE experts as one grouped GEMM (TransformerEngine)")
    moe_shared_expert_overlap: bool = arg(False, "overlap shared-expert compute with token dispatch")
    moe_permute_fusion: bool = arg(False, "fused token permutation in MoE dispatch (TransformerEngine)")
    moe_expert_capacity_factor: float | None = arg(None, "MoE expert capacity factor: tokens over it are dropped "
                                                         "(default: none dropped)")
    expert_tensor_parallel_size: int = arg(1, "tensor parallel ranks inside each expert (1: experts are not split)")
    fp8_format: Literal["e4m3", "hybrid"] | None = arg(None, "FP8 GEMMs (TransformerEngine on Hopper or newer)")
    fp8_recipe: Literal["tensorwise", "delayed", "mxfp8", "blockwise"] = arg("delayed", "FP8 scaling recipe")
    fp8_param_gather: bool = arg(False, "keep parameters in FP8 and all-gather them in FP8 (with --fp8_format)")
    mtp_num_layers: int | None = arg(None, "multi-token-prediction layers")
    decoder_first_pipeline_num_layers: int | None = arg(
        None, "layers on the first pipeline stage, the rest split evenly over the others (default: all even)")
    decoder_last_pipeline_num_layers: int | None = arg(
        None, "layers on the last pipeline stage, the rest split evenly over the others (default: all even)")
    linear_decoupled_in_proj: bool = arg(False, "split linear attention's in_proj for FP8 (GatedDeltaNet models)")
    use_precision_aware_optimizer: bool = arg(False, "TransformerEngine's FusedAdam with low-precision state")
    exp_avg_dtype: Literal["fp32", "fp16", "bf16", "fp8"] = arg("fp32", "Adam first moment dtype (precision-aware)")
    exp_avg_sq_dtype: Literal["fp32", "fp16", "bf16", "fp8"] = arg("fp32", "Adam second moment dtype "
                                                                          "(precision-aware)")
    optimizer_cpu_offload: bool = arg(False, "keep optimizer state (and its step) on the CPU")
    optimizer_offload_fraction: float = arg(1.0, "with --optimizer_cpu_offload: share of the state offloaded")


def check_core_args(core: MegatronCoreArgs, *, pipeline_parallel_size: int) -> list[str]:
    """Problems megatron-core would raise on later (or that cannot work here), each naming its flag."""
    problems = []
    if core.recompute_granularity != "full":
        for flag in ("recompute_method", "recompute_num_layers"):
            if getattr(core, flag) is not None:
                problems.append(f"--{flag} takes effect only with --recompute_granularity full")
    if core.recompute_modules and core.recompute_granularity != "selective":
        problems.append("--recompute_modules takes effect only with --recompute_granularity selective")
    if core.recompute_num_layers is not None and core.recompute_num_layers < 1:
        problems.append(f"--recompute_num_layers {core.recompute_num_layers}: must be at least 1")
    if core.fp8_param_gather and not core.fp8_format:
        problems.append("--fp8_param_gather needs --fp8_format (megatron-core: fp8_param must be used together "
                        "with fp8 mode)")
    if not 0 <= core.optimizer_offload_fraction <= 1:
        problems.append(f"--optimizer_offload_fraction {core.optimizer_offload_fraction}: must be within [0, 1]")
    if core.moe_expert_capacity_factor is not None and core.moe_expert_capacity_factor < 0:
        problems.append(f"--moe_expert_capacity_factor {core.moe_expert_capacity_factor}: must be at least 0")
    if core.moe_aux_loss_coeff < 0:
        problems.append(f"--moe_aux_loss_coeff {core.moe_aux_loss_coeff}: must be at least 0")
    if core.expert_tensor_parallel_size != 1:
        problems.append(f"--expert_tensor_parallel_size {core.expert_tensor_parallel_size}: experts are converted "
                        "whole per EP rank here (1 only); use --expert_model_parallel_size")
    if core.mtp_num_layers:
        problems.append("--mtp_num_layers: the families megatron trains here (llama, qwen2, qwen3, mistral, "
                        "qwen3_moe) have no multi-token-prediction weights to load or export")
    if core.linear_decoupled_in_proj:
        problems.append("--linear_decoupled_in_proj applies to linear-attention (GatedDeltaNet) models, which "
                        "megatron does not train here")
    for which in ("first", "last"):
        layers = getattr(core, f"decoder_{which}_pipeline_num_layers")
        if layers is not None and (layers < 1 or pipeline_parallel_size < 2):
            problems.append(f"--decoder_{which}_pipeline_num_layers {layers}: needs --pipeline_model_parallel_size "
                            "> 1 and at least 1 layer")
    low_precision_state = core.exp_avg_dtype != "fp32" or core.exp_avg_sq_dtype != "fp32"
    if low_precision_state and not core.use_precision_aware_optimizer:
        problems.append("--exp_avg_dtype/--exp_avg_sq_dtype take effect only with "
                            "--use_precision_aware_optimizer true")
    return problems


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _unavailable(flag: str, why: str) -> None:
    logger.warning("--%s does nothing on this device: %s", flag, why)


def transformer_options(core: MegatronCoreArgs, *, has_moe: bool, use_te: bool) -> dict[str, Any]:
    """TransformerConfig keywords for these flags on this device; one log line per flag that cannot act here."""
    out: dict[str, Any] = {"recompute_granularity": core.recompute_granularity}
    if core.recompute_granularity == "full":
        out |= {"recompute_method": core.recompute_method or "uniform",
                "recompute_num_layers": core.recompute_num_layers or 1}
    elif core.recompute_granularity == "selective":
        out["recompute_modules"] = list(core.recompute_modules or ["core_attn"])
    out["cross_entropy_loss_fusion"] = core.cross_entropy_loss_fusion
    out["cross_entropy_fusion_impl"] = core.cross_entropy_fusion_impl
    if core.cross_entropy_loss_fusion and core.cross_entropy_fusion_impl == "te" and not use_te:
        _unavailable("cross_entropy_fusion_impl te", "no TransformerEngine; the native fused kernel runs")
        out["cross_entropy_fusion_impl"] = "native"
    out["masked_softmax_fusion"] = core.masked_softmax_fusion
    if core.masked_softmax_fusion and not _cuda():
        _unavailable("masked_softmax_fusion", "its kernel is CUDA-only; torch softmax runs")
    cuda_ext = _cuda() and (use_te or has_module("fused_weight_gradient_mlp_cuda"))
    out["gradient_accumulation_fusion"] = core.gradient_accumulation_fusion and cuda_ext
    if core.gradient_accumulation_fusion and not cuda_ext:
        _unavailable("gradient_accumulation_fusion", "needs CUDA with APEX's fused_weight_gradient_mlp_cuda or "
                     "TransformerEngine")
    if core.attention_backend != "auto":
        if use_te:
            from megatron.core.transformer.enums import AttnBackend

            out["attention_backend"] = AttnBackend[core.attention_backend]
        elif core.attention_backend != "local":
            _unavailable(f"attention_backend {core.attention_backend}",
                         "no TransformerEngine; the local layer spec's torch attention runs")
    out |= _moe_options(core, has_moe=has_moe, use_te=use_te)
    if core.fp8_format:
        if use_te:
            out |= {"fp8": core.fp8_format, "fp8_recipe": core.fp8_recipe, "fp8_param": core.fp8_param_gather}
        else:
            _unavailable("fp8_format", "FP8 GEMMs need TransformerEngine on a Hopper (or newer) GPU")
    if core.decoder_first_pipeline_num_layers is not None:
        out["num_layers_in_first_pipeline_stage"] = core.decoder_first_pipeline_num_layers
    if core.decoder_last_pipeline_num_layers is not None:
        out["num_layers_in_last_pipeline_stage"] = core.decoder_last_pipeline_num_layers
    return out


def _moe_options(core: MegatronCoreArgs, *, has_moe: bool, use_te: bool) -> dict[str, Any]:
    asked = [flag for flag, on in (("moe_aux_loss_coeff", core.moe_aux_loss_coeff > 0),
                                   ("moe_grouped_gemm", core.moe_grouped_gemm),
                                   ("moe_shared_expert_overlap", core.moe_shared_expert_overlap),
                                   ("moe_permute_fusion", core.moe_permute_fusion),
                                   ("moe_expert_capacity_factor", core.moe_expert_capacity_factor is not None),
                                   ("moe_router_dtype", core.moe_router_dtype != "fp32"))
             if on]
    if not has_moe:
        if asked:
            logger.warning("--%s do nothing: this model has no MoE layers", ", --".join(asked))
        return {}
    out: dict[str, Any] = {"moe_aux_loss_coeff": core.moe_aux_loss_coeff,
                           "moe_router_load_balancing_type": "aux_loss" if core.moe_aux_loss_coeff > 0 else "none",
                           "moe_expert_capacity_factor": core.moe_expert_capacity_factor,
                           "moe_router_dtype": None if core.moe_router_dtype == "none" else core.moe_router_dtype}
    if core.moe_grouped_gemm:
        # the converter maps SequentialMLP's per-expert linears; grouped experts store other tensors
        _unavailable("moe_grouped_gemm", "experts run as per-expert linears (SequentialMLP), the layout the HF "
                     "conversion maps")
    if core.moe_shared_expert_overlap:
        _unavailable("moe_shared_expert_overlap", "this model has no shared experts")
    if core.moe_permute_fusion:
        if use_te:
            out["moe_permute_fusion"] = True
        else:
            _unavailable("moe_permute_fusion", "the fused permutation is TransformerEngine's")
    return out


def optimizer_options(core: MegatronCoreArgs, *, use_distributed_optimizer: bool) -> dict[str, Any]:
    """OptimizerConfig keywords for these flags on this device."""
    import torch

    out: dict[str, Any] = {}
    if core.use_precision_aware_optimizer:
        if _cuda() and has_module("transformer_engine") and use_distributed_optimizer:
            out |= {"use_precision_aware_optimizer": True,
                    "exp_avg_dtype": getattr(torch, STATE_DTYPES[core.exp_avg_dtype]),
                    "exp_avg_sq_dtype": getattr(torch, STATE_DTYPES[core.exp_avg_sq_dtype])}
        else:
            _unavailable("use_precision_aware_optimizer", "needs TransformerEngine's FusedAdam on CUDA and "
                         "--use_distributed_optimizer true")
    if core.optimizer_cpu_offload:
        if _cuda():
            out |= {"optimizer_cpu_offload": True, "optimizer_offload_fraction": core.optimizer_offload_fraction}
        else:
            _unavailable("optimizer_cpu_offload", "the weights and optimizer state are on the CPU already")
    return out
