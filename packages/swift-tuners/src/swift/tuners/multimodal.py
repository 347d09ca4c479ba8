"""Vision/audio language models: which parts train (--freeze_vit / --freeze_aligner / --freeze_llm), what
`--target_modules all-linear` covers, and the parts' own learning rates (--vit_lr / --aligner_lr).

ms-swift's semantics: by default the vision tower and the aligner are frozen and the LLM trains; with a full tuner
the flags freeze those parts' weights, with an adapter tuner and `all-linear` they decide which parts' linears get
adapters (the vision tower's only with --freeze_vit false). The parts are the family's `ModelParts`
(`swift.core.model_parts`: registered families, else transformers' usual attribute names).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from swift.core import ConfigError, model_parts, part_of
from swift.tuners.arguments import TunerArgs

logger = logging.getLogger(__name__)

PART_FLAGS = {"vision": "freeze_vit", "aligner": "freeze_aligner", "language_model": "freeze_llm"}
DEFAULT_FROZEN = {"vision": True, "aligner": True, "language_model": False}


def parts_of(model: Any) -> Any:
    info = getattr(model, "swift_model_info", None)
    return model_parts(model, getattr(info, "meta", None))


def frozen(args: TunerArgs, part: str) -> bool:
    value = getattr(args, PART_FLAGS[part])
    return DEFAULT_FROZEN[part] if value is None else bool(value)


def check_text_model(model: Any, args: TunerArgs) -> None:
    """The multimodal flags on a text model: nothing they could do, so say so (an lr for a part that is not there
    is an error; a freeze flag, a warning)."""
    if args.vit_lr is not None or args.aligner_lr is not None:
        flag = "--vit_lr" if args.vit_lr is not None else "--aligner_lr"
        raise ConfigError(f"{flag}: {type(model).__name__} is a text model, it has no vision tower or aligner")
    given = [f"--{flag}" for flag in PART_FLAGS.values() if getattr(args, flag) is not None]
    if given:
        logger.warning("%s: %s is a text model; these flags only act on vision/audio language models",
                       " ".join(given), type(model).__name__)


def multimodal_args(model: Any, args: TunerArgs, parts: Any) -> TunerArgs:
    """`all-linear` narrowed to the linears of the parts that are not frozen (the output head left out)."""
    import torch

    if list(args.target_modules or ["all-linear"]) != ["all-linear"]:
        return args
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not output
             and (part := part_of(name, parts)) is not None and not frozen(args, part)]
    if not names:
        raise ConfigError("--target_modules all-linear: every part is frozen (--freeze_llm / --freeze_vit / "
                          "--freeze_aligner); nothing would get an adapter")
    return dataclasses.replace(args, target_modules=names)


def freeze_parts(model: Any, args: TunerArgs, parts: Any) -> None:
    """Full tuners: the parameters of frozen parts stop training."""
    for name, parameter in model.named_parameters():
        part = part_of(_strip_wrapper(name), parts)
        if part is not None and frozen(args, part):
            parameter.requires_grad_(False)


def part_lr_ratios(args: TunerArgs, parts: Any, learning_rate: float | None) -> dict[str, float]:
    """--vit_lr / --aligner_lr as factors on the learning rate of the parameters under those parts' prefixes
    (the aligner's first: Qwen-VL's merger sits inside the vision tower)."""
    wanted = {"aligner": args.aligner_lr, "vision": args.vit_lr}
    ratios: dict[str, float] = {}
    for part, lr in wanted.items():
        if lr is None:
            continue
        flag = "--vit_lr" if part == "vision" else "--aligner_lr"
        if frozen(args, part):
            raise ConfigError(f"{flag} {lr}: the {part} is frozen (--{PART_FLAGS[part]} true is the default); "
                              f"pass --{PART_FLAGS[part]} false to train it at that learning rate")
        if not learning_rate:
            raise ConfigError(f"{flag}: the run's learning rate is unknown")
        prefixes = parts.aligner if part == "aligner" else parts.vision
        for prefix in prefixes:
            ratios[prefix + "."] = lr / learning_rate
    return ratios


def _strip_wrapper(name: str) -> str:
    return name.removeprefix("base_model.model.")
