"""The model registry: `MODELS` maps `model_type` to its `ModelMeta`; ids map back to their family."""

from __future__ import annotations

import difflib

from swift.core.errors import DuplicateNameError, UnknownModelError
from swift.core.model.meta import ModelMeta

MODELS: dict[str, ModelMeta] = {}
_BY_ID: dict[str, str] = {}  # lower-cased hub id -> model_type


def register_model(meta: ModelMeta, *, replace: bool = False) -> None:
    """Add a model family; an existing `model_type` (or one of its ids) is refused unless `replace=True`."""
    if meta.model_type in MODELS and not replace:
        raise DuplicateNameError(f"model_type {meta.model_type!r} exists; pass replace=True to override it")
    for model_id in meta.ids:
        owner = _BY_ID.get(model_id.lower())
        if owner is not None and owner != meta.model_type and not replace:
            raise DuplicateNameError(f"model id {model_id!r} is registered under {owner!r} already")
    MODELS[meta.model_type] = meta
    for model_id in meta.ids:
        _BY_ID[model_id.lower()] = meta.model_type


def get_model_meta(model_type: str) -> ModelMeta:
    if model_type not in MODELS:
        hint = difflib.get_close_matches(model_type, MODELS, n=3)
        raise UnknownModelError(f"--model_type {model_type!r} is unknown" + (f"; did you mean {hint}?" if hint else ""))
    return MODELS[model_type]


def find_model_meta(model_id: str) -> ModelMeta | None:
    """The registered family of a hub id (`Qwen/Qwen2.5-7B-Instruct`), or None."""
    model_type = _BY_ID.get(model_id.lower())
    return MODELS.get(model_type) if model_type else None


def find_model_meta_by_config(config: dict) -> ModelMeta | None:
    """The multimodal family whose transformers `model_type` is config.json's (for models not registered by id)."""
    model_type = config.get("model_type")
    for meta in MODELS.values():
        if model_type in meta.config_model_types:
            return meta
    return None


def closest_model_ids(model_id: str, n: int = 5) -> list[str]:
    ids = [i for meta in MODELS.values() for i in meta.ids]
    by_lower = {i.lower(): i for i in ids}
    return [by_lower[m] for m in difflib.get_close_matches(model_id.lower(), list(by_lower), n=n, cutoff=0.5)]
