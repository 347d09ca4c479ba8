"""Builders per argument group: every command turns `ModelArgs`, `TemplateArgs` and `DataArgs` into a model, a
template and rows through these, so no call site unpacks a group by hand and the defaults that depend on other flags
(the default max length, what "delete" truncation means) are decided here once.

    model, tokenizer = load_model(args.model)                         # every ModelArgs flag, as given
    ref, _ = load_model(args.model, model=ref_id, model_type=None)    # the same dtype/device/hub flags, another id
    template = build_template(args.template, tokenizer)
    train, val = load_rows(args.data)
    encoded = encode_rows(train, template, args.data, args.template)

Nothing heavy is imported at module level: `check_data_args` runs before torch loads.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift.core.arguments.groups import DataArgs, ModelArgs, TemplateArgs
from swift.core.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

    from swift.core.template import Template

logger = logging.getLogger(__name__)

# Rows longer than this are dropped (or cut, with --truncation_strategy left/right) when --max_length is not given.
DEFAULT_MAX_LENGTH = 2048
# On CPU, bf16 autocast's casts cost more than its matmuls save below this width (one thread, 2-layer llama, vocab
# 49k, 256 tokens, forward + backward: hidden 64 0.82x of fp32, 128 1.18x, 256 1.27x, 576 1.39x). Tiny test models
# therefore train in fp32, which also keeps multi-process runs equal to one process (bf16 rounds each rank's partial
# gradients on its own: 1.7e-4 loss gap after 4 steps on a 64-wide llama, 9.5e-7 in fp32).
CPU_BF16_MIN_HIDDEN = 128
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")


def load_model(args: ModelArgs, *, load_model: bool = True, quantization: Any = None, num_labels: int | None = None,
               need_weights: bool | None = None, **overrides: Any) -> tuple[Any, Any]:
    """`(model, tokenizer)` for the flags of `args`; `overrides` replace ModelArgs fields (`model=` another id with
    the same hub flags, `torch_dtype=`, `device_map=`). `model` is None with `load_model=False`; `need_weights=True`
    then still puts the weights on disk (for serving libraries that read them themselves)."""
    from swift.core.model.loader import get_model_tokenizer
    from swift.core.plugins import load_custom_register

    args = dataclasses.replace(args, **overrides)
    load_custom_register(args.custom_register_path)
    model, tokenizer = get_model_tokenizer(
        args.model, args.torch_dtype, args.device_map, args.attn_impl, quantization, load_model,
        model_type=args.model_type, revision=args.model_revision, use_hf=args.use_hf, token=args.hub_token,
        trust_remote_code=args.trust_remote_code, num_labels=num_labels, need_weights=need_weights,
        experts_impl=args.experts_impl, rope_scaling=args.rope_scaling, max_model_len=args.max_model_len,
        check_files=args.check_model)
    if args.new_special_tokens:
        add_special_tokens(model, tokenizer, special_token_list(args.new_special_tokens))
    return model, tokenizer


def special_token_list(entries: list[str]) -> list[str]:
    """--new_special_tokens values: tokens, or .txt files holding tokens separated by whitespace."""
    from swift.core.errors import ConfigError

    tokens = []
    for entry in entries:
        if entry.endswith(".txt"):
            path = Path(entry).expanduser()
            if not path.is_file():
                raise ConfigError(f"--new_special_tokens {entry}: no such file")
            tokens += path.read_text(encoding="utf-8").split()
        else:
            tokens.append(entry)
    return list(dict.fromkeys(tokens))


def add_special_tokens(model: Any, tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add `tokens` as special tokens (the same ids every time for the same base and list) and grow the input and
    output embeddings to the tokenizer's size (new rows: the mean of the old ones, transformers' default). The ids
    that are new to the model go on `model.swift_new_token_ids` (LoRA trains those rows)."""
    text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    text_tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    ids = text_tokenizer.convert_tokens_to_ids(tokens)
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        if len(text_tokenizer) > rows:
            model.resize_token_embeddings(len(text_tokenizer))
        model.swift_new_token_ids = sorted(i for i in ids if i >= rows)
        logger.info("--new_special_tokens: %d tokens (ids %s); embeddings %d -> %d rows", len(tokens), ids, rows,
                    model.get_input_embeddings().weight.shape[0])
    return ids


def max_length(args: TemplateArgs) -> int:
    """--max_length, or the default every trainer uses."""
    return args.max_length or DEFAULT_MAX_LENGTH


def drops_long_rows(args: TemplateArgs) -> bool:
    """--truncation_strategy delete: long rows are filtered out of the dataset, never cut by the template."""
    return args.truncation_strategy == "delete"


def build_template(args: TemplateArgs, tokenizer: Any, *, pretrain: bool = False, **overrides: Any) -> Template:
    """The template of the flags; `pretrain` puts the loss on every token. `overrides` replace TemplateArgs fields."""
    from swift.core.template import get_template

    args = dataclasses.replace(args, **overrides)
    problems = check_template_args(args)
    if problems:
        raise ConfigError("; ".join(problems))
    return get_template(
        args.template, tokenizer, default_system=args.system,
        max_length=None if drops_long_rows(args) else max_length(args),
        truncation_strategy=args.truncation_strategy, loss_scale="all" if pretrain else args.loss_scale,
        enable_thinking=args.enable_thinking, max_pixels=args.max_pixels, norm_bbox=args.norm_bbox,
        agent_template=args.agent_template, use_chat_template=args.use_chat_template,
        response_prefix=args.response_prefix, add_non_thinking_prefix=args.add_non_thinking_prefix)


def check_template_args(args: TemplateArgs) -> list[str]:
    """Problems with the template flags that need no tokenizer: --loss_scale's parts, --agent_template's name,
    --enable_channel_loss (one line each)."""
    from swift.core.template.template import loss_and_agent_problems

    problems = loss_and_agent_problems(args.loss_scale, args.agent_template)
    if args.enable_channel_loss:
        problems.append("--enable_channel_loss: the trainer does not split the loss by the rows' 'channel' yet, so "
                        "the flag would log nothing; leave it off")
    return problems


def use_bf16(requested: bool | None, *, hidden_size: int | None = None, cpu: bool = True) -> bool:
    """--bf16 as given, else on where the hardware runs bf16 fast: CUDA with bf16, or (when the trainer can use it
    on CPU, as swift sft's autocast does; `cpu=False` for megatron's bf16 weights) a CPU with AMX / AVX512-BF16 and a
    model at least CPU_BF16_MIN_HIDDEN wide."""
    import torch

    from swift.core import env

    if requested is not None:
        return requested
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu and env.cpu_has_fast_bf16() and (hidden_size is None or hidden_size >= CPU_BF16_MIN_HIDDEN)


def check_data_args(args: DataArgs) -> list[str]:
    """Problems with the data flags that need no import: missing files, a bad split ratio (one line each)."""
    problems = []
    for spec in [*args.dataset, *args.val_dataset]:
        path = spec.split("#")[0]
        looks_local = path.startswith((".", "/", "~")) or path.endswith(_FILE_SUFFIXES)
        if looks_local and not Path(path).expanduser().exists() and not Path(path.split(":")[0]).expanduser().exists():
            problems.append(f"--dataset {spec}: no such file or folder")
    if not 0.0 <= args.split_dataset_ratio < 1.0:
        problems.append(f"--split_dataset_ratio {args.split_dataset_ratio}: must be within [0, 1)")
    if args.dataset_num_proc < 1:
        problems.append(f"--dataset_num_proc {args.dataset_num_proc}: must be at least 1")
    if args.shuffle_buffer_size < 1:
        problems.append(f"--shuffle_buffer_size {args.shuffle_buffer_size}: must be at least 1")
    return problems


def load_rows(args: DataArgs, *, require_answer: bool = True) -> tuple[Dataset | IterableDataset, Dataset | None]:
    """(train, val) rows of --dataset / --val_dataset / --split_dataset_ratio, shuffled with --data_seed unless
    streamed; a bad file fails in seconds, before any weights load."""
    from swift.core.dataset import load_dataset

    common = dict(strict=args.strict, seed=args.data_seed, num_proc=args.dataset_num_proc,
                  require_answer=require_answer, columns=args.columns)
    train, val = load_dataset(
        args.dataset, split_dataset_ratio=0.0 if args.val_dataset else args.split_dataset_ratio,
        streaming=args.streaming, model_name=args.model_name or None, model_author=args.model_author or None,
        **common)
    if args.dataset_shuffle and not args.streaming:
        train = train.shuffle(seed=args.data_seed)
    elif args.dataset_shuffle:
        train = train.shuffle(seed=args.data_seed, buffer_size=args.shuffle_buffer_size)
    if args.val_dataset:
        val, _ = load_dataset(args.val_dataset, **common)
    return train, val


def encode_rows(rows: Any, template: Template, data: DataArgs, tmpl: TemplateArgs, *, encode: Any = None,
                **encode_kwargs: Any) -> Any:
    """Rows encoded by the template (or by `encode(template, row, **encode_kwargs)`), lazily with --lazy_tokenize;
    under --truncation_strategy delete the rows over --max_length are dropped (and counted) here."""
    from swift.core.dataset import encode_dataset

    if rows is None:
        return None
    if encode is not None:
        fn = functools.partial(encode, template, **encode_kwargs)
    else:
        fn = functools.partial(template.encode, **encode_kwargs) if encode_kwargs else template.encode
    fingerprint = None
    if template.is_multimodal and hasattr(rows, "_fingerprint") and not getattr(rows, "cache_files", None):
        import uuid

        # datasets would hash the encode function, which pickles the processor (1.4 s idle, ~5 s on a busy machine,
        # per split); rows held in memory (local files) have no cache that the fingerprint would key.
        fingerprint = uuid.uuid4().hex
    limit = max_length(tmpl) if drops_long_rows(tmpl) else None

    def run() -> Any:
        return encode_dataset(rows, fn, num_proc=data.dataset_num_proc, lazy=data.lazy_tokenize, max_length=limit,
                              fingerprint=fingerprint)

    if not data.load_from_cache_file or data.lazy_tokenize or data.streaming:
        if data.load_from_cache_file:
            logger.warning("--load_from_cache_file: nothing to cache under --%s (rows are encoded as they are read)",
                           "streaming" if data.streaming else "lazy_tokenize")
        return run()
    from importlib.metadata import version

    from swift.core.dataset.cache import cached_encode, template_identity

    how = f"{getattr(encode, '__module__', '')}.{getattr(encode, '__qualname__', None) or 'template.encode'}"
    return cached_encode(rows, {**template_identity(template), "swift_core": version("swift-core"), "encode": how,
                                "kwargs": encode_kwargs, "max_length": limit}, run)
