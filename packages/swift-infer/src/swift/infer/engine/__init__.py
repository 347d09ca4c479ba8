"""Inference engines: one chat API (`InferEngine`) over backends that only generate from token ids.

Backends load on first use; vLLM, SGLang and LMDeploy are optional extras.
"""

from swift.core import lazy_exports

_EXPORTS = {
    "InferEngine": "swift.infer.engine.engine",
    "PtEngine": "swift.infer.engine.pt.engine",
    "VllmEngine": "swift.infer.engine.vllm",
    "SglangEngine": "swift.infer.engine.sglang",
    "LmdeployEngine": "swift.infer.engine.lmdeploy",
    # a new serving library: an ExternalEngine subclass over its LoopBackend (see swift/infer/engine/external.py)
    "ExternalEngine": "swift.infer.engine.external",
    "LoopBackend": "swift.infer.engine.external",
    "GenerationRequest": "swift.infer.engine.types",
    "GenerationOutput": "swift.infer.engine.types",
    "SamplingParams": "swift.infer.engine.types",
    "Generator": "swift.infer.engine.types",
    "PtGenerator": "swift.infer.engine.pt.scheduler",
    "RequestError": "swift.infer.engine.errors",
    "UnknownAdapterError": "swift.infer.engine.errors",
    "EngineError": "swift.infer.engine.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
