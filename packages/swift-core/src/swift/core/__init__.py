"""swift.core: model, template and dataset registries, arguments, and the `swift` CLI dispatcher.

`import swift.core` is light: torch, transformers and datasets load only when a function that needs them runs.
"""

from swift.core.lazy import lazy_exports

_EXPORTS = {
    "get_model_tokenizer": "swift.core.model.loader",
    "ModelInfo": "swift.core.model.loader",
    "ModelMeta": "swift.core.model",
    "ModelId": "swift.core.model",
    "load_custom_register": "swift.core.plugins",
    "MODELS": "swift.core.model",
    "register_model": "swift.core.model",
    "get_model_meta": "swift.core.model",
    "find_model_meta": "swift.core.model",
    "SwiftError": "swift.core.errors",
    "ConfigError": "swift.core.errors",
    "UnknownModelError": "swift.core.errors",
    "DatasetRowError": "swift.core.errors",
    "MissingBackendError": "swift.core.errors",
    "load_dataset": "swift.core.dataset",
    "DatasetMeta": "swift.core.dataset",
    "DATASETS": "swift.core.dataset",
    "register_dataset": "swift.core.dataset",
    "encode_dataset": "swift.core.dataset",
    "pack_dataset": "swift.core.dataset",
    "get_template": "swift.core.template",
    "Template": "swift.core.template",
    "TemplateMeta": "swift.core.template",
    "register_template": "swift.core.template",
    "TEMPLATES": "swift.core.template",
    "read_args": "swift.core.run_args",
    "write_json_atomic": "swift.core.run_args",
    "ARGS_FILE": "swift.core.run_args",
    "parse_args": "swift.core.arguments",
    "ModelArgs": "swift.core.arguments",
    "DataArgs": "swift.core.arguments",
    "TemplateArgs": "swift.core.arguments",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
