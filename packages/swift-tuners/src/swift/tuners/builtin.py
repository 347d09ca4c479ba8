"""The built-in tuners: one `register_tuner` each. To add a tuner, add its entry here (or in a plugin file)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swift.core import ConfigError
from swift.tuners import peft_family
from swift.tuners.arguments import TunerArgs
from swift.tuners.freeze import apply_freeze, decoder_layers, only_train
from swift.tuners.registry import Tuned, TunerContext, TunerMeta, register_tuner


def peft_tuner(build_config: Callable[..., Any]) -> Callable[[Any, TunerArgs, TunerContext], Tuned]:
    """A tuner from a PEFT config builder: the adapter, our CPU LoRA dropout, --trainable_parameters, LoRA+."""

    def apply(model: Any, args: TunerArgs, context: TunerContext) -> Tuned:
        from peft import get_peft_model

        from swift.tuners.dropout import speed_up_lora_dropout

        config = build_config(args, model, context)
        lora_ga = getattr(config, "init_lora_weights", None) == "lora_ga"
        if lora_ga:
            from swift.tuners.lora_ga import estimate_gradients

            estimate_gradients(model, config, args, context.sample_batches)
        try:
            model = get_peft_model(model, config)
        except ValueError as e:
            if "lora_dropout" not in str(e):
                raise
            # peft puts LoRA on fused MoE expert weights (one parameter for all experts) without dropout
            raise ConfigError(f"--lora_dropout {args.lora_dropout}: this model's MoE experts are fused weights, "
                              "which peft's LoRA trains without dropout; pass --lora_dropout 0") from None
        speed_up_lora_dropout(model)
        if args.trainable_parameters:
            for name, parameter in model.named_parameters():
                if any(name.startswith(p) or p in name for p in args.trainable_parameters):
                    parameter.requires_grad_(True)
        # LoRA+ (Hayou et al. 2024): B learns lorap_lr_ratio times faster than A.
        ratios = {"lora_B": args.lorap_lr_ratio, "lora_embedding_B": args.lorap_lr_ratio} if args.lorap_lr_ratio else {}
        callbacks = []
        if lora_ga:
            from swift.tuners.lora_ga import converter

            callbacks.append(converter(model))
        return Tuned(model, callbacks=callbacks, lr_ratios=ratios)

    return apply


def apply_full(model: Any, args: TunerArgs, context: TunerContext) -> Any:
    return apply_freeze(model, args)


def apply_llamapro(model: Any, args: TunerArgs, context: TunerContext) -> Any:
    from swift.tuners.llamapro import expand_blocks

    new = expand_blocks(model, args.llamapro_num_new_blocks)
    _, path = decoder_layers(model)
    only_train(model, [f"{path}.{i}." for i in new] + list(args.trainable_parameters))
    return model


def apply_lisa(model: Any, args: TunerArgs, context: TunerContext) -> Tuned:
    from swift.tuners.lisa import LisaCallback

    # Every parameter is trainable when the optimizer is built, so that it holds every layer; the callback then
    # freezes all but --lisa_activated_layers decoder layers from the first step on.
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return Tuned(model, callbacks=[LisaCallback(model, args.lisa_activated_layers, args.lisa_step_interval,
                                                context.seed)])


_PEFT = {
    "lora": (peft_family.lora_config, "LoRA (rsLoRA, DoRA, PiSSA/OLoRA/LoftQ init, LoRA+ with --lorap_lr_ratio)"),
    "adalora": (peft_family.adalora_config, "AdaLoRA: LoRA whose ranks are pruned to --lora_rank as it trains"),
    "ia3": (peft_family.ia3_config, "IA3: learned scaling of attention and feed-forward activations"),
    "vera": (peft_family.vera_config, "VeRA: one shared random projection pair, trained scales"),
    "boft": (peft_family.boft_config, "BOFT: butterfly orthogonal fine-tuning"),
    "fourierft": (peft_family.fourierft_config, "FourierFT: trained spectral coefficients"),
}
for _name, (_config, _help) in _PEFT.items():
    register_tuner(TunerMeta(_name, peft_tuner(_config), _help))
# peft prepends virtual tokens and drops position_ids, so packed rows would attend across each other.
register_tuner(TunerMeta("prompt", peft_tuner(peft_family.prompt_config), "prompt tuning: trained virtual tokens",
                         padding_free=False))
register_tuner(TunerMeta("prefix", peft_tuner(peft_family.prefix_config), "prefix tuning: trained key/value prefixes",
                         padding_free=False))
register_tuner(TunerMeta("full", apply_full, "every parameter (minus --freeze_parameters)", full_weights=True))
register_tuner(TunerMeta("freeze", apply_full, "full training with --freeze_parameters / --freeze_parameters_ratio",
                         full_weights=True))
register_tuner(TunerMeta("llamapro", apply_llamapro, "LLaMA-Pro: new identity blocks train, the rest is frozen",
                         full_weights=True))
register_tuner(TunerMeta("lisa", apply_lisa, "LISA: a few random decoder layers train at a time", full_weights=True))
register_tuner(TunerMeta("adapter", None, not_built="bottleneck adapters; lora or ia3 are close"))
register_tuner(TunerMeta("reft", None, not_built="ReFT through pyreft"))
