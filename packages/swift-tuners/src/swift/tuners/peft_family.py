"""PEFT configs from our flags: LoRA (rsLoRA, DoRA, PiSSA/OLoRA/LoftQ init), AdaLoRA, IA3, VeRA, BOFT, FourierFT,
prompt and prefix tuning. Each builder takes the tuner flags, the model and the run's `TunerContext` and returns a
`peft.PeftConfig` (the registry entries in `builtin.py` wrap them)."""

from __future__ import annotations

import re
from typing import Any

from swift.core import ConfigError
from swift.tuners.arguments import TunerArgs
from swift.tuners.registry import TunerContext
from swift.tuners.targets import linear_module_names, resolve_target_modules


def task_type(model: Any) -> str:
    """peft's task type from the model's head: a sequence-classification model (reward models) keeps its score head
    trainable (peft adds it to modules_to_save); everything else is a causal LM."""
    from peft import TaskType

    name = type(model).__name__
    return TaskType.SEQ_CLS if name.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM


def _init_weights(value: str) -> bool | str:
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    if text in ("lora-ga", "lora_ga"):
        return "lora_ga"
    if text in ("gaussian", "pissa", "olora", "loftq") or re.fullmatch(r"pissa_niter_\d+", text):
        return text
    if text in ("eva", "corda"):
        raise ConfigError(f"--init_weights {value}: peft's {text.upper()} needs activation statistics gathered from "
                          "training rows, which is not wired yet; use lora-ga (gradients of training rows), pissa or "
                          "olora")
    raise ConfigError(f"--init_weights {value!r}: use true, false, gaussian, pissa, pissa_niter_N, olora, lora-ga or "
                      "loftq")


def lora_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import LoraConfig

    init = _init_weights(args.init_weights)
    loftq = None
    if init == "loftq":
        from peft import LoftQConfig

        loftq = LoftQConfig(loftq_bits=args.quant_bits or 4, loftq_iter=args.loftq_iter)
    lora_ga = None
    if init == "lora_ga":
        from peft import LoraGAConfig

        lora_ga = LoraGAConfig(direction=args.lora_ga_direction, scale=args.lora_ga_scale,
                               stable_gamma=args.lora_ga_stable_gamma)
    return LoraConfig(
        task_type=task_type(model), r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=resolve_target_modules(args.target_modules), modules_to_save=args.modules_to_save or None,
        bias=args.lora_bias, use_rslora=args.use_rslora, use_dora=args.use_dora, init_lora_weights=init,
        loftq_config=loftq or {}, lora_ga_config=lora_ga, trainable_token_indices=new_token_rows(args, model),
    )


def new_token_rows(args: TunerArgs, model: Any) -> dict[str, list[int]] | None:
    """--new_special_tokens under LoRA: peft trains just those rows of the input embedding (and of a tied output
    head), saved in the adapter, unless --modules_to_save trains the whole embedding."""
    ids = getattr(model, "swift_new_token_ids", None)
    if not ids:
        return None
    embedding = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is embedding)
    if any(name.endswith(m) for m in args.modules_to_save):
        return None
    return {name.rsplit(".", 1)[-1]: list(ids)}


def check_init_weights(args: TunerArgs) -> list[str]:
    """--init_weights problems that show before the model loads (peft computes LoftQ on CUDA with bitsandbytes)."""
    try:
        init = _init_weights(args.init_weights)
    except ConfigError as e:
        return [str(e)]
    if init == "lora_ga":
        return [f"--{flag} {getattr(args, flag)}: must be at least 1" for flag in (
            "lora_ga_batch_size", "lora_ga_iters", "lora_ga_max_length", "lora_ga_stable_gamma")
            if getattr(args, flag) < 1]
    if init != "loftq":
        return []
    import importlib.util

    import torch

    problems = []
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        problems.append("--init_weights loftq: peft computes LoftQ's quantization on a CUDA GPU with bitsandbytes; "
                        "this machine has " + ("no CUDA GPU" if not torch.cuda.is_available() else "no bitsandbytes"))
    if args.quant_bits not in (None, 4, 8):
        problems.append(f"--init_weights loftq --quant_bits {args.quant_bits}: LoftQ quantizes to 4 or 8 bits")
    if args.loftq_iter < 1:
        problems.append(f"--loftq_iter {args.loftq_iter}: must be at least 1")
    return problems


def adalora_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import AdaLoraConfig

    total_step = context.total_steps
    if not total_step:
        raise ConfigError("--train_type adalora needs the number of training steps (set --max_steps or epochs)")
    return AdaLoraConfig(
        task_type=task_type(model), init_r=args.lora_rank * 2, target_r=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, target_modules=resolve_target_modules(args.target_modules),
        total_step=total_step, modules_to_save=args.modules_to_save or None,
    )


def ia3_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import IA3Config

    names = linear_module_names(model)
    targets = resolve_target_modules(args.target_modules)
    targets = names if targets == "all-linear" else targets
    # IA3 scales the feed-forward input: the down projection (or the last MLP linear) is its feed-forward module.
    feedforward = [n for n in (targets if isinstance(targets, list) else names) if n in ("down_proj", "fc2", "w2")]
    return IA3Config(task_type=task_type(model), target_modules=targets, feedforward_modules=feedforward,
                     modules_to_save=args.modules_to_save or None)


def vera_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import VeraConfig

    return VeraConfig(task_type=task_type(model), r=max(args.lora_rank, 32),
                      target_modules=_same_shape_targets(args, model), vera_dropout=args.lora_dropout,
                      modules_to_save=args.modules_to_save or None)


def boft_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import BOFTConfig

    return BOFTConfig(task_type=task_type(model), boft_block_size=4, boft_n_butterfly_factor=1,
                      target_modules=resolve_target_modules(args.target_modules), boft_dropout=args.lora_dropout,
                      modules_to_save=args.modules_to_save or None)


def fourierft_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import FourierFTConfig

    return FourierFTConfig(task_type=task_type(model), n_frequency=1000,
                           target_modules=resolve_target_modules(args.target_modules),
                           modules_to_save=args.modules_to_save or None)


def prompt_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type=task_type(model), num_virtual_tokens=args.lora_rank * 2)


def prefix_config(args: TunerArgs, model: Any, context: TunerContext):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=task_type(model), num_virtual_tokens=args.lora_rank * 2)


def _same_shape_targets(args: TunerArgs, model: Any) -> list[str] | str:
    """VeRA shares one random projection pair, so every target must have the same shape: keep q/v style layers."""
    targets = resolve_target_modules(args.target_modules)
    if targets != "all-linear":
        return targets
    names = linear_module_names(model)
    attention = [n for n in ("q_proj", "v_proj") if n in names]
    return attention or names
