"""Registered model families: each module is data, one `register_model(...)` per family."""

from swift.core.model.families import chat, multimodal  # noqa: F401  (registers on import)
