"""Flags of `swift infer`, `deploy`, `eval`, `rollout` and `sample`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swift.core.arguments import DataArgs, ModelArgs, TemplateArgs, arg
from swift.infer.backends import backend_choices


def _metric_choices() -> dict[str, str | None]:
    from swift.core import METRICS

    return dict.fromkeys(METRICS)


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
    max_batch_size: int = arg(16, "most sequences decoded together (PyTorch engine; vLLM's max_num_seqs)",
                              aliases=["vllm_max_num_seqs"])
    result_path: str | None = arg(None, "jsonl file for the answers to --val_dataset")
    write_batch_size: int = arg(1000, "answers appended to --result_path together, in dataset order (-1: all at the "
                                      "end); an interrupted run keeps every answer written and resumes after it")
    load_data_args: bool = arg(False, "with --adapters / --ckpt_dir: the data flags of the checkpoint's args.json "
                                      "(--dataset, --val_dataset, --split_dataset_ratio, --data_seed, --max_length...),"
                                      " so that the rows answered are the validation rows training held out; flags "
                                      "given here win")
    metric: str | None = arg(None, "score the answers against each row's reference (its last assistant message): "
                                   "acc (exact match) or rouge (ROUGE-1/2/L F1 and BLEU-4); printed and written "
                                   "next to --result_path", choices=_metric_choices)
    gpu_memory_utilization: float | None = arg(
        None, "vLLM / SGLang: fraction of GPU memory to use (default: the library's, 0.9 for vLLM); vLLM on a CPU: "
              "fraction of RAM, and when unset a KV cache of VLLM_CPU_KVCACHE_SPACE GiB (default 2)",
        aliases=["vllm_gpu_memory_utilization"])
    tensor_parallel_size: int = arg(1, "vLLM / SGLang / LMDeploy tensor parallelism",
                                    aliases=["vllm_tensor_parallel_size"])
    vllm_max_model_len: int | None = arg(None, "serving engines: longest prompt + answer in tokens (default: "
                                               "--max_model_len, else the model's)")
    vllm_enforce_eager: bool = arg(False, "vLLM: no torch.compile / CUDA graphs (starts in seconds, decodes slower)")
    vllm_enable_prefix_caching: bool | None = arg(None, "vLLM: reuse the KV cache of shared prompt prefixes "
                                                        "(default: vLLM's)")
    vllm_max_lora_rank: int | None = arg(None, "vLLM: largest LoRA rank served (default: the smallest vLLM "
                                               "allows that fits every --adapters checkpoint)")
    vllm_quantization: str | None = arg(None, "vLLM: quantization method of the weights (vLLM's --quantization)")
    vllm_use_async_engine: bool | None = arg(None, "vLLM: AsyncLLM with its engine core in a process of its own, as "
                                                   "`vllm serve` runs (default: on a GPU); else vLLM's engine in "
                                                   "this process (starts faster, uses every CPU core)")
    vllm_engine_kwargs: dict | None = arg(None, "vLLM: JSON of further engine arguments, e.g. "
                                                "'{\"swap_space\": 4}' (vLLM's own names)")


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
class ChatMediaArgs:
    """Chat media"""

    image: list[str] = arg([], "chat and pipe mode: images (paths, URLs, data: URIs) sent with the first query "
                               "(a pipe: with every line); a query's <image> tags place them, else they go first",
                           aliases=["images"])
    video: list[str] = arg([], "chat and pipe mode: videos (files or folders of frames), as --image",
                           aliases=["videos"])
    audio: list[str] = arg([], "chat and pipe mode: audio files, as --image", aliases=["audios"])


@dataclass
class EngineArguments:
    """What every command that builds an engine takes."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    infer: InferArgs = field(default_factory=InferArgs)


@dataclass
class InferArguments(EngineArguments):
    """Chat with a model, or run a dataset through it."""

    chat: ChatMediaArgs = field(default_factory=ChatMediaArgs)


@dataclass
class DeployArguments(EngineArguments):
    """Serve a model over an OpenAI-compatible HTTP API."""

    server: ServerArgs = field(default_factory=ServerArgs)


@dataclass
class EvalArguments(DeployArguments):
    """Evaluate a model (through our own server) or any OpenAI-compatible server with EvalScope."""

    eval: EvalArgs = field(default_factory=EvalArgs)


def _rollout_backends() -> dict[str, str | None]:
    return {"vllm": None}


@dataclass
class RolloutInferArgs(InferArgs):
    """Inference (swift rollout: vLLM, in this process, so that the trainer's weights can be loaded into it)"""

    infer_backend: str = arg("vllm", "inference engine (swift rollout serves vLLM)", choices=_rollout_backends)
    vllm_enable_lora: bool = arg(False, "take the trainer's LoRA adapter as it trains (faster weight sync for LoRA "
                                        "training); else the trainer sends merged weights")


@dataclass
class RolloutArguments(DeployArguments):
    """Serve vLLM rollouts to a GRPO trainer in another process (`swift rlhf --use_vllm true --vllm_mode server`):
    the OpenAI routes plus /rollout/generate and weight updates after each optimizer step."""

    infer: RolloutInferArgs = field(default_factory=RolloutInferArgs)


def _sampler_types() -> dict[str, str | None]:
    return {"sample": None, "mcts": "not built yet (tree search over reasoning steps)",
            "distill": "not built yet (answers of a teacher behind an OpenAI API: use --sampler_engine with the "
                       "teacher as --model)"}


def _sampler_engines() -> dict[str, str | None]:
    return {**backend_choices(), "transformers": None}


@dataclass
class SampleArgs:
    """Sampling"""

    sampler_type: str = arg("sample", "what to sample: several answers per prompt", choices=_sampler_types)
    sampler_engine: str = arg("pt", "engine that answers: pt (alias transformers), vllm, ... (--infer_backend's "
                                    "names)", choices=_sampler_engines)
    num_return_sequences: int = arg(64, "answers sampled per prompt")
    n_best_to_keep: int = arg(5, "answers written per prompt: the best by --orm_model (unscored: the first)")
    orm_model: str | None = arg(None, "scores each answer: a reward function name (GRPO's --reward_funcs "
                                      "registry, e.g. accuracy; plugins by --external_plugins) or a reward model "
                                      "(directory or hub id with a sequence-classification head)")
    prm_model: str | None = arg(None, "process reward model (not built yet: refused)")
    easy_query_threshold: float | None = arg(None, "drop a prompt when more than this share of its answers score "
                                                   "above 0.5 (too easy to teach anything)")
    output_dir: str = arg("sample_output", "where the jsonl goes")
    output_file: str | None = arg(None, "file name in --output_dir (default: a timestamp .jsonl); an existing one "
                                        "is resumed")
    override_exist_file: bool = arg(False, "start --output_file afresh instead of resuming it")
    num_sampling_batch_size: int = arg(8, "prompts sampled together")
    data_range: list[int] = arg([], "I N: sample only the I-th (from 0) of N equal parts of the dataset, for N "
                                    "parallel runs")
    external_plugins: list[str] = arg([], "python files registering reward functions (run before the other flags "
                                          "are checked)", plugin=True)


@dataclass
class SampleArguments(EngineArguments):
    """Several answers per prompt, scored by a reward function or model, the best written as jsonl
    (rejection-sampling / distillation data)."""

    sample: SampleArgs = field(default_factory=SampleArgs)
