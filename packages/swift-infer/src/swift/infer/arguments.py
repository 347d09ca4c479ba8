"""Flags of `swift infer`, `deploy`, `eval`, `rollout` and `sample`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import DataArgs, ModelArgs, TemplateArgs, arg
from swift.infer.backends import backend_choices


@dataclass
class InferArgs:
    """Inference"""

    adapters: list[str] = arg([], "LoRA checkpoint(s); the base model and template come from their args.json")
    ckpt_dir: str | None = arg(None, "checkpoint directory (adapter or full weights)")
    infer_backend: str = arg("pt", "inference engine (a --custom_register_path file can register more)",
                             choices=backend_choices)
    merge_lora: bool = arg(False, "merge the adapters into the base before serving")
    max_new_tokens: int | None = arg(None, "longest answer in tokens", aliases=["max_tokens"])
    temperature: float | None = arg(None, "sampling temperature (0: greedy); default: the model's generation config")
    top_p: float | None = arg(None, "nucleus sampling")
    top_k: int | None = arg(None, "top-k sampling")
    repetition_penalty: float | None = arg(None, "penalty on repeated tokens")
    seed: int | None = arg(None, "sampling seed (the same answer for the same request)")
    stop_words: list[str] = arg([], "extra strings that end an answer", aliases=["stop"])
    stream: bool | None = arg(None, "stream tokens as they come (default: on in a terminal)")
    max_batch_size: int = arg(16, "most sequences decoded together (PyTorch engine)")
    result_path: str | None = arg(None, "jsonl file for the answers to --val_dataset")
    gpu_memory_utilization: float = arg(0.9, "vLLM / SGLang: fraction of GPU memory to use")
    tensor_parallel_size: int = arg(1, "vLLM / SGLang / LMDeploy tensor parallelism")
    max_model_len: int | None = arg(None, "longest prompt + answer in tokens (default: the model's)")


@dataclass
class ServerArgs:
    """Server"""

    host: str = arg("127.0.0.1", "address to listen on")
    port: int = arg(8000, "port to listen on")
    api_key: str | None = arg(None, "require this bearer key on every request (swift eval: the key to send); set "
                              "SWIFT_API_KEY instead to keep the key off the command line and out of `ps`",
                              secret=True, env="SWIFT_API_KEY")
    max_concurrency: int | None = arg(None, "most requests served at once; more get 429 (default: no limit)")
    served_model_name: str | None = arg(None, "model name in /v1/models (default: the model's name)")
    log_interval: int = arg(20, "seconds between throughput log lines (0: never)")


@dataclass
class EvalArgs:
    """Evaluation"""

    eval_dataset: list[str] = arg([], "EvalScope datasets, e.g. general_mcq general_qa ARC_c gsm8k mmlu")
    dataset_args: dict | None = arg(None, "JSON of per-dataset options, e.g. "
                                    '{"general_mcq": {"local_path": "DIR", "subset_list": ["NAME"]}}')
    eval_limit: int | None = arg(None, "rows per dataset subset (default: all)")
    eval_generation_config: dict | None = arg(None, "JSON of generation options for eval requests "
                                              '(default: {"temperature": 0, "max_tokens": 512})')
    eval_output_dir: str = arg("eval_output", "where results go: <eval_output_dir>/<run>/results.json")
    eval_backend: Literal["Native"] = arg("Native", "EvalScope backend")
    eval_url: str | None = arg(None, "evaluate this OpenAI-compatible server (http://HOST:PORT/v1) instead of "
                               "starting ours; the model is --model, else the first one it lists")
    eval_num_proc: int = arg(8, "requests sent at once")
    eval_prompt_lang: Literal["en", "zh"] = arg("en", "prompt language of general_mcq / general_qa (zh: EvalScope's "
                                                "own Chinese prompts); dataset_args' prompt_template wins")
    eval_mcq_fallback: bool = arg(True, "multiple choice: when a reply has no 'ANSWER: X', read the label it opens "
                                        "with ('A) Tokyo') or the one option it names (false: EvalScope's scoring)")


@dataclass
class InferArguments:
    """Chat with a model, or run a dataset through it."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    infer: InferArgs = field(default_factory=InferArgs)


@dataclass
class DeployArguments(InferArguments):
    """Serve a model over an OpenAI-compatible HTTP API."""

    server: ServerArgs = field(default_factory=ServerArgs)


@dataclass
class EvalArguments(DeployArguments):
    """Evaluate a model (through our own server) or any OpenAI-compatible server with EvalScope."""

    eval: EvalArgs = field(default_factory=EvalArgs)


@dataclass
class RolloutArguments(DeployArguments):
    """Not built yet (issue 7): checks its flags, then stops. To come: vLLM rollouts served to a GRPO trainer."""


@dataclass
class SampleArguments(InferArguments):
    """Not built yet (a later issue): checks its flags, then stops. To come: several scored answers per prompt."""
