"""swift.infer: inference engines, `swift infer`, an OpenAI-compatible `swift deploy`, and `swift eval`.

Public names load on first use; nothing here imports training code (trl, deepspeed) or gradio.
"""

from swift.core.lazy import lazy_exports

_EXPORTS = {
    "InferArguments": "swift.infer.arguments",
    "DeployArguments": "swift.infer.arguments",
    "EvalArguments": "swift.infer.arguments",
    "infer_main": "swift.infer.cli",
    "deploy_main": "swift.infer.cli",
    "eval_main": "swift.infer.cli",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
