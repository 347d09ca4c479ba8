"""Argument groups that every command shares: which model, which data, how it is templated.

Flag names are ms-swift's (and HF TrainingArguments') so existing scripts keep working. Satellites add their own
groups (tuners, training, inference, server) and compose them per command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from swift.core.arguments.parser import arg


@dataclass
class ModelArgs:
    """Model"""

    model: str | None = arg(None, "model id (HF / ModelScope hub), registered name or local directory",
                            deprecated=["model_id_or_path"])
    model_type: str | None = arg(None, "registered model family, when the id alone does not say it")
    model_revision: str | None = arg(None, "hub revision (branch, tag or commit)")
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = arg(
        None, "weights dtype; default: the config's dtype on GPU; on CPU float32 for training (bf16 comes from "
              "autocast) and bfloat16 for serving where the CPU has AMX/AVX512-BF16", aliases=["dtype"])
    attn_impl: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"] | None = arg(
        None, "attention implementation; default: sdpa, or flash attention when installed on CUDA")
    experts_impl: Literal["eager", "grouped_mm", "batched_mm"] | None = arg(
        None, "MoE models: how the experts run (eager: a loop over experts; grouped_mm / batched_mm: one kernel for "
              "all; default: transformers' choice)")
    device_map: str | None = arg(None, "device map: auto, cpu, cuda, or a JSON mapping")
    rope_scaling: str | None = arg(None, "RoPE scaling: a type (linear, dynamic, yarn, llama3) scaled to --max_model_len,"
                                         " or a JSON object of rope parameters that replaces the config's")
    max_model_len: int | None = arg(None, "the model's context length: replaces max_position_embeddings in its config "
                                          "(with --rope_scaling TYPE, the length the positions are scaled to); "
                                          "serving engines stop there")
    use_hf: bool = arg(True, "download from the Hugging Face hub (false: ModelScope, as USE_MODELSCOPE_HUB=1)")
    hub_token: str | None = arg(None, "hub token for private models (or the hub's login); never written to disk",
                                secret=True, env="HF_TOKEN")
    trust_remote_code: bool = arg(False, "run model code shipped in the model repository (never on by default)")
    check_model: bool = arg(True, "check that the model's safetensors files are whole (headers and sizes) before "
                                  "loading them, naming a file cut short or modified")
    new_special_tokens: list[str] = arg([], "tokens to add to the tokenizer as special tokens (or .txt files with "
                                            "one per whitespace); the embeddings grow to hold them, and LoRA trains "
                                            "their rows")
    custom_register_path: list[str] = arg([], "python files that register extra models, templates, datasets, "
                                              "tuners or engines (run before the other flags are checked)",
                                          plugin=True)
    task_type: Literal["causal_lm", "seq_cls", "embedding", "reranker", "generative_reranker"] | None = arg(
        None, "what the model is trained / served for: causal_lm (chat), seq_cls (a classification or regression "
              "head), embedding (last-token vectors, L2-normalised), reranker (a one-score head on query + "
              "document), generative_reranker (P(yes) of the causal LM); default causal_lm, and for swift infer / "
              "deploy --adapters the checkpoint's (docs/tasks.md)")
    num_labels: int | None = arg(None, "--task_type seq_cls: number of classes (1: regression)")
    problem_type: Literal["regression", "single_label_classification", "multi_label_classification"] | None = arg(
        None, "--task_type seq_cls: default regression for --num_labels 1 or float labels, multi-label for list "
              "labels, else single-label classification")


@dataclass
class DataArgs:
    """Data"""

    dataset: list[str] = arg([], "datasets: files (.jsonl .json .csv .parquet .txt), folders, hub ids or "
                                 "registered names, each as name_or_path[:subset][#N]")
    val_dataset: list[str] = arg([], "validation datasets, same syntax as --dataset")
    columns: dict[str, str] | None = arg(None, "rename raw columns of the datasets before they are read, as JSON: "
                                               "'{\"text1\": \"query\", \"text2\": \"response\"}' (applies to "
                                               "every dataset that has the column)")
    split_dataset_ratio: float = arg(0.0, "fraction of --dataset held out for validation when no --val_dataset")
    data_seed: int = arg(42, "seed for sampling #N rows and the validation split")
    dataset_num_proc: int = arg(1, "processes for preprocessing and tokenising")
    dataset_shuffle: bool = arg(True, "shuffle the training set")
    streaming: bool = arg(False, "stream the datasets instead of loading them whole")
    shuffle_buffer_size: int = arg(1000, "--streaming with --dataset_shuffle: a stream is shuffled within a buffer "
                                         "of this many rows (seeded by --data_seed); 1 keeps the file order")
    strict: bool = arg(True, "fail on the first bad row (false: skip bad rows, count them and warn)")
    lazy_tokenize: bool = arg(False, "tokenise rows when the trainer asks for them, not up front")
    load_from_cache_file: bool = arg(False, "reuse the encoded rows of an earlier run on the same rows, template "
                                            "and max length (kept under $SWIFT_CACHE/encoded); false encodes again")
    model_name: list[str] = arg([], "name the model gives itself in the self-cognition data: NAME [NAME_ZH]")
    model_author: list[str] = arg([], "author named in the self-cognition data: AUTHOR [AUTHOR_ZH]")


def _agent_templates() -> dict[str, str | None]:
    from swift.core.template.agent import agent_template_choices

    return agent_template_choices()


@dataclass
class TemplateArgs:
    """Template"""

    template: str | None = arg(None, "chat template; default: the model family's, else the tokenizer's chat_template",
                               aliases=["template_type"])
    system: str | None = arg(None, "default system prompt")
    max_length: int | None = arg(None, "maximum tokens per encoded row")
    truncation_strategy: Literal["delete", "left", "right"] = arg(
        "delete", "what to do with rows longer than --max_length")
    loss_scale: str = arg("default", "where the loss is taken and with what weight: a base (default: every assistant "
                                     "turn, last_round: the turns after the last user or tool message, all) and/or "
                                     "rules joined by '+' (ignore_empty_think, ignore_think_prefix, hermes, react, "
                                     "qwen, alpha_umi, agentflan), e.g. last_round+hermes+ignore_empty_think")
    agent_template: str | None = arg(None, "write tools, tool calls and results in this agent format (hermes, "
                                           "react_en, qwen_en, llama3, mistral, glm4...); default: the chat "
                                           "template renders them", choices=_agent_templates)
    use_chat_template: bool = arg(True, "render with the chat template; false: the generation format (the turns' "
                                        "texts one after another, no roles or system prompt, EOS after the answer)")
    response_prefix: str | None = arg(None, "text generated answers start with (e.g. '<think>\\n'): appended to "
                                            "generation prompts and put back before parsing the answer")
    add_non_thinking_prefix: bool = arg(True, "hybrid-thinking families: answers without reasoning start with the "
                                              "empty think block where the chat template does not write it itself")
    enable_channel_loss: bool = arg(False, "log the loss per row 'channel' (not built: refused)")
    enable_thinking: bool | None = arg(None, "render the thinking part for models that have one")
    padding_free: bool = arg(True, "flatten each batch into one row with position_ids: no padding compute, each row "
                                   "attends only to itself (no flash-attention needed); false pads to the longest")
    packing: bool = arg(False, "pack rows into --max_length bins (padding-free, each row attends to itself)")
    max_pixels: int | None = arg(None, "multimodal models: images over this many pixels (width x height) are scaled "
                                       "down, aspect kept, before the processor sees them (Qwen-VL also read the "
                                       "MAX_PIXELS environment variable, their processor's own bound)")
    norm_bbox: Literal["norm1000", "none"] | None = arg(
        None, "grounding rows (objects): boxes as 0-1000 fractions or in the pixels the model sees; default: the "
              "model family's convention")


# --load_data_args: what is read besides the data group (ms-swift's DataArguments hold max_length and truncation)
_TEMPLATE_DATA_FLAGS = ("max_length", "truncation_strategy")


def recorded_data_args(data: DataArgs, template: TemplateArgs,
                       recorded: dict[str, Any]) -> tuple[DataArgs, TemplateArgs]:
    """--load_data_args: the data flags (and --max_length / --truncation_strategy) of a run's args.json where the
    command line left them at their defaults (a flag given wins)."""
    return _fill_defaults(data, recorded), _fill_defaults(template, recorded, names=_TEMPLATE_DATA_FLAGS)


def _fill_defaults(group: Any, recorded: dict[str, Any], names: tuple[str, ...] | None = None) -> Any:
    updates = {}
    for f in dataclasses.fields(group):
        if (names is not None and f.name not in names) or recorded.get(f.name) is None:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if getattr(group, f.name) == default:
            updates[f.name] = recorded[f.name]
    return dataclasses.replace(group, **updates)
