"""Tuner flags: which parameters train and how (LoRA family, full, freeze...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swift.core.arguments import arg


def _train_types() -> dict[str, str | None]:
    from swift.tuners.registry import tuner_choices

    return tuner_choices()


@dataclass
class TunerArgs:
    """Tuner"""

    train_type: str = arg("lora", "what to train (the tuner registry's names)", aliases=["tuner_type"],
                          deprecated=["sft_type"], choices=_train_types)
    target_modules: list[str] = arg(["all-linear"], "modules to adapt: all-linear, module names, or one regex")
    modules_to_save: list[str] = arg([], "modules trained in full and saved beside the adapter (e.g. lm_head)")
    lora_rank: int = arg(8, "LoRA rank r")
    lora_alpha: int = arg(32, "LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with --use_rslora)")
    lora_dropout: float = arg(0.05, "dropout on the LoRA input")
    lora_bias: Literal["none", "all", "lora_only"] = arg("none", "which biases train")
    use_rslora: bool = arg(False, "rank-stabilised LoRA scaling")
    use_dora: bool = arg(False, "weight-decomposed LoRA (DoRA)")
    lorap_lr_ratio: float | None = arg(None, "LoRA+: the B matrices learn at --learning_rate x this (10-16 is usual)")
    init_weights: str = arg("true", "LoRA init: true, false, gaussian, pissa, pissa_niter_N, olora, lora-ga "
                                    "(from the gradients of a few training batches, --lora_ga_*), loftq (LoftQ: "
                                    "CUDA + bitsandbytes, --quant_bits 4|8, --loftq_iter)")
    lora_ga_batch_size: int = arg(2, "LoRA-GA: training rows per gradient-estimation batch")
    lora_ga_iters: int = arg(2, "LoRA-GA: batches whose gradients are averaged")
    lora_ga_max_length: int = arg(1024, "LoRA-GA: tokens kept per row while estimating the gradients")
    lora_ga_direction: Literal["ArBr", "A2rBr", "ArB2r", "random"] = arg(
        "ArB2r", "LoRA-GA: which of the gradient's 2r singular vectors initialise A and B")
    lora_ga_scale: Literal["stable", "weight_svd", "gd_scale", "unit"] = arg(
        "stable", "LoRA-GA: how the initial A and B are scaled")
    lora_ga_stable_gamma: int = arg(16, "LoRA-GA: gamma of --lora_ga_scale stable")
    loftq_iter: int = arg(1, "LoftQ: alternating quantize / low-rank steps")
    freeze_parameters: list[str] = arg([], "parameter name prefixes to freeze (--train_type freeze/full)")
    freeze_parameters_ratio: float = arg(0.0, "fraction of the bottom layers to freeze")
    trainable_parameters: list[str] = arg([], "parameter name prefixes (or regex) trained even when frozen")
    llamapro_num_new_blocks: int = arg(4, "LLaMA-Pro: decoder blocks added")
    lisa_activated_layers: int = arg(2, "LISA: layers trained at a time")
    lisa_step_interval: int = arg(20, "LISA: steps between re-sampling the trained layers")
    freeze_llm: bool | None = arg(None, "multimodal models: freeze the language model (full tuners) or keep adapters "
                                        "off it (all-linear); default false")
    freeze_vit: bool | None = arg(None, "multimodal models: freeze the vision/audio tower, or keep adapters off it; "
                                        "default true")
    freeze_aligner: bool | None = arg(None, "multimodal models: freeze the aligner (projector), or keep adapters off "
                                            "it; default true")
    vit_lr: float | None = arg(None, "multimodal models: learning rate of the vision tower (with --freeze_vit false)")
    aligner_lr: float | None = arg(None, "multimodal models: learning rate of the aligner (with --freeze_aligner "
                                         "false)")
    quant_method: Literal["bnb"] | None = arg(None, "quantize the base for QLoRA (needs bitsandbytes and CUDA)")
    quant_bits: Literal[4, 8] | None = arg(None, "bits of the quantized base")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = arg("nf4", "QLoRA 4-bit: the 4-bit data type")
    bnb_4bit_use_double_quant: bool = arg(True, "QLoRA 4-bit: quantize the quantization scales too")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] | None = arg(
        None, "QLoRA 4-bit: dtype of the matmuls on the dequantized weights (default: bfloat16)")
