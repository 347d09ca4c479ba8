"""`prepare_model`: the one entry from `--train_type` to a model whose trainable parameters are the tuner's."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from swift.core.errors import ConfigError, MissingBackendError
from swift.tuners.arguments import TunerArgs
from swift.tuners.freeze import apply_freeze, only_train
from swift.tuners.peft_family import BUILDERS

logger = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    model: Any
    callbacks: list[Any] = field(default_factory=list)  # trainer callbacks the tuner needs (LISA)
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


def prepare_model(model: Any, args: TunerArgs, *, total_steps: int | None = None, seed: int = 42) -> PreparedModel:
    """Apply the tuner of `args.train_type` to `model` and log what trains (count and %)."""
    kind = args.train_type
    callbacks: list[Any] = []
    if args.quant_method is not None:
        _check_quantized_base(model, args)
    if kind in BUILDERS:
        from peft import get_peft_model

        builder = BUILDERS[kind]
        config = builder(args, model, total_step=total_steps) if kind == "adalora" else builder(args, model)
        model = get_peft_model(model, config)
        from swift.tuners.dropout import speed_up_lora_dropout

        speed_up_lora_dropout(model)
        if args.trainable_parameters:
            for name, parameter in model.named_parameters():
                if any(name.startswith(p) or p in name for p in args.trainable_parameters):
                    parameter.requires_grad_(True)
    elif kind in ("full", "freeze"):
        model = apply_freeze(model, args)
    elif kind == "llamapro":
        from swift.tuners.llamapro import expand_blocks

        new = expand_blocks(model, args.llamapro_num_new_blocks)
        from swift.tuners.freeze import decoder_layers

        _, path = decoder_layers(model)
        only_train(model, [f"{path}.{i}." for i in new] + list(args.trainable_parameters))
    elif kind == "lisa":
        from swift.tuners.lisa import make_lisa_callback

        for parameter in model.parameters():
            parameter.requires_grad_(True)
        callbacks.append(make_lisa_callback(model, args.lisa_activated_layers, args.lisa_step_interval, seed))
    elif kind == "reft":
        try:
            import pyreft  # noqa: F401
        except ImportError as e:
            raise MissingBackendError("pyreft", extra="pyreft") from e
        raise ConfigError("--train_type reft: pyreft is installed, but Swift does not drive it yet")
    elif kind == "adapter":
        raise ConfigError("--train_type adapter (bottleneck adapters) is not supported yet; lora or ia3 are close")
    else:
        raise ConfigError(f"--train_type {kind!r} is unknown")
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ConfigError(f"--train_type {kind}: nothing would train; check --target_modules / --freeze_parameters")
    prepared = PreparedModel(model, callbacks, trainable, total)
    logger.info("--train_type %s: %s", kind, prepared.summary)
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
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _check_quantized_base(model: Any, args: TunerArgs) -> None:
    if args.train_type not in BUILDERS:
        raise ConfigError(f"--quant_method {args.quant_method} (QLoRA) needs an adapter --train_type, not {args.train_type}")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model)
