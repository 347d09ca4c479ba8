"""`prepare_model`: the one entry from `--train_type` to a model whose trainable parameters are the tuner's."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from swift.core import ConfigError, MissingBackendError
from swift.tuners.arguments import TunerArgs
from swift.tuners.registry import Tuned, TunerContext, TunerMeta, get_tuner

logger = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    model: Any
    meta: TunerMeta
    callbacks: list[Any] = field(default_factory=list)  # trainer callbacks the tuner needs (LISA)
    lr_ratios: dict[str, float] = field(default_factory=dict)  # parameter-name substring -> learning-rate factor
    trainable: int = 0
    total: int = 0

    @property
    def summary(self) -> str:
        share = 100 * self.trainable / max(self.total, 1)
        return f"trainable parameters: {self.trainable:,} of {self.total:,} ({share:.4f}%)"


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = total = 0
    for parameter in model.parameters():
        n = parameter.numel()
        total += n
        trainable += n if parameter.requires_grad else 0
    return trainable, total


def check_tuner_args(args: TunerArgs) -> list[str]:
    """Tuner flag problems that show before the model loads, one line each."""
    from swift.tuners.peft_family import check_init_weights

    problems = []
    try:
        meta = get_tuner(args.train_type)
        if meta.not_built:
            problems.append(f"--train_type {args.train_type}: not built yet ({meta.not_built})")
    except ConfigError as e:
        problems.append(str(e))
    if args.lora_rank < 1:
        problems.append(f"--lora_rank {args.lora_rank}: must be at least 1")
    if args.lorap_lr_ratio is not None and args.lorap_lr_ratio <= 0:
        problems.append(f"--lorap_lr_ratio {args.lorap_lr_ratio}: must be positive")
    if args.lorap_lr_ratio is not None and args.train_type != "lora":
        problems.append(f"--lorap_lr_ratio is LoRA+: it needs --train_type lora, not {args.train_type}")
    if args.train_type == "lora":
        problems += check_init_weights(args)
    if args.quant_method is not None:
        try:
            quantization_config(args)
        except (ConfigError, MissingBackendError) as e:
            problems.append(str(e))
    return problems


def prepare_model(model: Any, args: TunerArgs, *, total_steps: int | None = None, seed: int = 42,
                  learning_rate: float | None = None, sample_batches: Any = None) -> PreparedModel:
    """Apply the registered tuner of `args.train_type` to `model` and log what trains (count and %).

    Multimodal models: the frozen parts and what all-linear covers follow --freeze_llm / --freeze_vit /
    --freeze_aligner, and --vit_lr / --aligner_lr become learning-rate factors (`multimodal.py`)."""
    from swift.tuners import multimodal
    meta = get_tuner(args.train_type)
    if meta.apply is None:
        raise ConfigError(f"--train_type {meta.name}: not built yet ({meta.not_built})")
    if args.quant_method is not None:
        _check_quantized_base(model, args, meta)
    if args.lorap_lr_ratio is not None and args.train_type != "lora":
        raise ConfigError(f"--lorap_lr_ratio is LoRA+: it needs --train_type lora, not {args.train_type}")
    parts = multimodal.parts_of(model)
    if parts is None:
        multimodal.check_text_model(model, args)
    else:
        args = multimodal.multimodal_args(model, args, parts)
    result = meta.apply(model, args, TunerContext(total_steps=total_steps, seed=seed, learning_rate=learning_rate,
                                                  sample_batches=sample_batches))
    tuned = result if isinstance(result, Tuned) else Tuned(result)
    if parts is not None:
        if meta.full_weights:
            multimodal.freeze_parts(tuned.model, args, parts)
        tuned.lr_ratios = {**multimodal.part_lr_ratios(args, parts, learning_rate), **tuned.lr_ratios}
    trainable, total = count_parameters(tuned.model)
    if trainable == 0:
        raise ConfigError(f"--train_type {meta.name}: nothing would train; check --target_modules / --freeze_parameters")
    prepared = PreparedModel(tuned.model, meta, tuned.callbacks, tuned.lr_ratios, trainable, total)
    logger.info("--train_type %s: %s", meta.name, prepared.summary)
    return prepared


def quantization_config(args: TunerArgs) -> Any:
    """The bitsandbytes config for QLoRA (`--quant_method bnb --quant_bits 4|8`), or None; fails clearly without CUDA
    or bitsandbytes instead of silently training in full precision."""
    if args.quant_method is None:
        return None
    if args.quant_bits not in (4, 8):
        raise ConfigError(f"--quant_method {args.quant_method} needs --quant_bits 4 or 8")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--quant_method bnb (QLoRA) needs a CUDA GPU; bitsandbytes does not quantize on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingBackendError("bitsandbytes", extra="bitsandbytes") from e
    from transformers import BitsAndBytesConfig

    if args.quant_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=args.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=args.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, args.bnb_4bit_compute_dtype or "bfloat16"))


def _check_quantized_base(model: Any, args: TunerArgs, meta: TunerMeta) -> None:
    if meta.full_weights:
        raise ConfigError(f"--quant_method {args.quant_method} (QLoRA) needs an adapter --train_type, not {args.train_type}")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model)
