"""Full and partial training: which parameters keep `requires_grad` (--freeze_parameters, --trainable_parameters)."""

from __future__ import annotations

import re
from typing import Any

from swift.core import ConfigError
from swift.tuners.arguments import TunerArgs


def _matches(name: str, patterns: list[str]) -> bool:
    """A prefix (`model.layers.0`) or a regular expression (`.*embed_tokens.*`) matching the parameter name."""
    return any(name.startswith(p) or re.fullmatch(p, name) for p in patterns)


def decoder_layers(model: Any):
    """The ModuleList of decoder blocks of a causal LM (llama, qwen, mistral, gemma, phi... layouts)."""
    import torch

    for path in ("model.layers", "model.model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return module, path
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} for this tuner")


def apply_freeze(model: Any, args: TunerArgs) -> Any:
    """full: every parameter trains, minus --freeze_parameters / the bottom --freeze_parameters_ratio of layers;
    --trainable_parameters always train."""
    if not 0.0 <= args.freeze_parameters_ratio <= 1.0:
        raise ConfigError(f"--freeze_parameters_ratio {args.freeze_parameters_ratio}: must be within [0, 1]")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    frozen_prefixes = list(args.freeze_parameters)
    if args.freeze_parameters_ratio > 0:
        layers, path = decoder_layers(model)
        count = round(len(layers) * args.freeze_parameters_ratio)
        frozen_prefixes += [f"{path}.{i}." for i in range(count)]
        if count == len(layers):
            frozen_prefixes.append("model.embed_tokens")
    for name, parameter in model.named_parameters():
        if _matches(name, frozen_prefixes) and not _matches(name, list(args.trainable_parameters)):
            parameter.requires_grad_(False)
    return model


def only_train(model: Any, patterns: list[str]) -> None:
    """Freeze everything except parameters matching `patterns` (prefixes or regex)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(_matches(name, patterns))
