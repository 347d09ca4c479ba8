"""`build_engine`: `swift infer` / `swift deploy` arguments -> a ready `InferEngine` of the chosen backend."""

from __future__ import annotations

import logging
from typing import Any

from swift.infer.arguments import InferArguments
from swift.infer.checkpoint import ServeSpec, resolve_serve_spec
from swift.infer.engine.engine import InferEngine
from swift.infer.protocol import RequestConfig

logger = logging.getLogger(__name__)


def default_request_config(args: InferArguments) -> RequestConfig:
    """The sampling flags, as defaults for whatever a request leaves unset."""
    infer = args.infer
    return RequestConfig(max_tokens=infer.max_new_tokens, temperature=infer.temperature, top_p=infer.top_p,
                         top_k=infer.top_k, repetition_penalty=infer.repetition_penalty, seed=infer.seed,
                         stop=list(infer.stop_words) or None)


def build_engine(args: InferArguments, *, model_name: str | None = None) -> InferEngine:
    """Load what the flags (and the checkpoints' args.json) say, on `--infer_backend`."""
    from swift.core import load_custom_register

    load_custom_register(args.model.custom_register_path)
    spec = resolve_serve_spec(args)
    backend = args.infer.infer_backend
    logger.info("serving %s with the %s engine%s", spec.model, backend,
                f" and adapters {sorted(spec.adapters)}" if spec.adapters else "")
    if backend == "pt":
        return _build_pt(args, spec, model_name)
    if backend == "vllm":
        from swift.infer.engine.vllm import VllmEngine as Engine
    elif backend == "sglang":
        from swift.infer.engine.sglang import SglangEngine as Engine
    else:
        from swift.infer.engine.lmdeploy import LmdeployEngine as Engine
    return Engine.from_spec(spec, args, model_name=model_name)


def load_template(args: InferArguments, spec: ServeSpec, tokenizer: Any) -> Any:
    from swift.core import get_template

    return get_template(spec.template, tokenizer, default_system=spec.system,
                        enable_thinking=args.template.enable_thinking)


def default_cpu_dtype() -> str | None:
    """Serving on a CPU with native bf16 matmuls (AMX / AVX512-BF16): bf16 weights, 1.4-1.6x the tokens/s of fp32
    on the packaged model (docs/benchmarks.md). Elsewhere None: the loader's choice (the checkpoint's dtype on a
    GPU, fp32 on other CPUs). `--torch_dtype float32` keeps fp32."""
    import torch

    from swift.core import env

    if torch.cuda.is_available() or not env.cpu_has_fast_bf16():
        return None
    return "bfloat16"


def _build_pt(args: InferArguments, spec: ServeSpec, model_name: str | None) -> InferEngine:
    from swift.core import get_model_tokenizer
    from swift.infer.engine.pt.engine import PtEngine

    margs = args.model
    model, tokenizer = get_model_tokenizer(
        spec.model, margs.torch_dtype or default_cpu_dtype(), margs.device_map, margs.attn_impl, model_type=margs.model_type,
        revision=margs.model_revision, use_hf=margs.use_hf, token=margs.hub_token,
        trust_remote_code=margs.trust_remote_code)
    if spec.merge:
        from peft import PeftModel

        for path in spec.merge:
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
            logger.info("merged %s into the base model", path)
    return PtEngine(model, tokenizer, template=load_template(args, spec, tokenizer), adapters=spec.adapters,
                    default_adapter=spec.default_adapter, max_batch_size=args.infer.max_batch_size,
                    default_config=default_request_config(args), model_name=model_name or spec.model,
                    max_model_len=args.infer.max_model_len)
