"""What the rest of Swift asks of a vision/audio language model: its processor's keyword arguments and its parts."""

from __future__ import annotations

import os
from typing import Any

from swift.core.model.meta import ModelMeta, ModelParts

# transformers' own layout (5.x): `<X>ForConditionalGeneration.model` holds the encoder, the projector and the LLM
# under one of these names; `lm_head` is on the outer model. Used for families that are not registered.
_VISION_NAMES = ("visual", "vision_tower", "vision_model", "audio_tower", "vision_encoder")
_ALIGNER_NAMES = ("multi_modal_projector", "connector", "mm_projector", "visual.merger", "visual.deepstack_merger_list",
                  "audio_projector")
_LLM_NAMES = ("language_model", "text_model")


def apply_processor_env(processor: Any, meta: ModelMeta | None) -> None:
    """The family's environment variables (ms-swift's MAX_PIXELS / MIN_PIXELS for Qwen-VL) set on the processor's
    image processor, whose `size` holds those bounds."""
    image_processor = getattr(processor, "image_processor", None)
    for variable, size_key in meta.env_processor_kwargs if meta else ():
        value = os.environ.get(variable)
        if not value or image_processor is None:
            continue
        try:
            pixels = int(value)
        except ValueError:
            from swift.core.errors import ConfigError

            raise ConfigError(f"{variable}={value!r}: give a whole number of pixels") from None
        image_processor.size = {**dict(image_processor.size or {}), size_key: pixels}


def model_parts(model: Any, meta: ModelMeta | None = None) -> ModelParts | None:
    """The vision / aligner / language-model prefixes of a loaded multimodal model, or None for a text model."""
    if meta is not None and meta.parts is not None:
        return meta.parts
    inner = getattr(model, "model", None)
    if inner is None:
        return None
    found = {name for name in (*_VISION_NAMES, *_ALIGNER_NAMES, *_LLM_NAMES) if _has(inner, name)}
    vision = tuple(f"model.{n}" for n in _VISION_NAMES if n in found)
    if not vision:
        return None
    aligner = tuple(f"model.{n}" for n in _ALIGNER_NAMES if n in found)
    llm = (*(f"model.{n}" for n in _LLM_NAMES if n in found), "lm_head")
    return ModelParts(vision, aligner, llm)


def _has(module: Any, dotted: str) -> bool:
    for name in dotted.split("."):
        module = getattr(module, name, None)
        if module is None:
            return False
    return True


def part_of(name: str, parts: ModelParts) -> str | None:
    """"vision", "aligner" or "language_model" for a parameter/module name (the aligner wins inside the vision)."""
    def under(prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    if under(parts.aligner):
        return "aligner"
    if under(parts.vision):
        return "vision"
    if under(parts.language_model):
        return "language_model"
    return None
