"""The model registry and loader (transformers is imported only when a model or tokenizer loads)."""

from swift.core.model import families as _families  # noqa: F401  (registers the built-in families)
from swift.core.model.meta import ModelId, ModelMeta, ModelParts
from swift.core.model.registry import MODELS, find_model_meta, get_model_meta, register_model

__all__ = ["MODELS", "ModelId", "ModelMeta", "ModelParts", "find_model_meta", "get_model_meta", "get_model_tokenizer", "register_model"]


def __getattr__(name: str):
    if name in ("get_model_tokenizer", "ModelInfo"):
        from swift.core.model import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'swift.core.model' has no attribute {name!r}")
