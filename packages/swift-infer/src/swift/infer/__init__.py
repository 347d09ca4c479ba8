"""swift.infer: inference engines, `swift infer`, an OpenAI-compatible `swift deploy`, and `swift eval`.

Public names load on first use; nothing here imports training code (trl, deepspeed) or gradio.
"""

from swift.core import lazy_exports

_EXPORTS = {
    # commands and their arguments
    "InferArguments": "swift.infer.arguments",
    "DeployArguments": "swift.infer.arguments",
    "EvalArguments": "swift.infer.arguments",
    "InferArgs": "swift.infer.arguments",
    "ServerArgs": "swift.infer.arguments",
    "infer_main": "swift.infer.cli",
    "deploy_main": "swift.infer.cli",
    "eval_main": "swift.infer.cli",
    # inference backends: one registry entry per --infer_backend
    "BackendMeta": "swift.infer.backends",
    "BACKENDS": "swift.infer.backends",
    "register_backend": "swift.infer.backends",
    "get_backend": "swift.infer.backends",
    "build_engine": "swift.infer.backends",
    # engines and requests
    "PtEngine": "swift.infer.engine",
    "VllmEngine": "swift.infer.engine",
    "SglangEngine": "swift.infer.engine",
    "LmdeployEngine": "swift.infer.engine",
    "InferEngine": "swift.infer.engine",
    "InferRequest": "swift.infer.protocol",
    "RequestConfig": "swift.infer.protocol",
    # a server for the run (swift eval, swift app): started in this process, or one that runs elsewhere
    "own_server": "swift.infer.eval.endpoint",
    "Endpoint": "swift.infer.eval.endpoint",
    "list_models": "swift.infer.eval.endpoint",
    "normalize_url": "swift.infer.eval.endpoint",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
