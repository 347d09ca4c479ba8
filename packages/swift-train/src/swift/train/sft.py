"""`swift sft` / `swift pt`: data -> template -> tuner -> transformers.Trainer, in the output layout of DESIGN.md."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core import env
from swift.core.arguments import to_flat_dict
from swift.core.errors import ConfigError, MissingBackendError
from swift.train.arguments import SftArguments

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path | None
    train_rows: int
    metrics: dict[str, Any]


def check_args(args: SftArguments) -> None:
    """Everything that can be checked before a model or dataset loads, all problems at once."""
    problems = []
    if not args.model.model:
        problems.append("--model is required (a hub id or a local directory)")
    if not args.data.dataset:
        problems.append("--dataset is required (files, folders, hub ids or registered names)")
    for spec in [*args.data.dataset, *args.data.val_dataset]:
        path = spec.split("#")[0]
        if ("/" in path or path.endswith((".jsonl", ".json", ".csv", ".parquet", ".txt"))) and path.startswith(
                (".", "/", "~")) and not Path(path.split(":")[0]).expanduser().exists():
            problems.append(f"--dataset {spec}: no such file or folder")
    if not 0.0 <= args.data.split_dataset_ratio < 1.0:
        problems.append(f"--split_dataset_ratio {args.data.split_dataset_ratio}: must be within [0, 1)")
    if args.template.max_length is not None and args.template.max_length < 8:
        problems.append(f"--max_length {args.template.max_length}: too short to hold a conversation")
    train = args.train
    for flag in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        if getattr(train, flag) < 1:
            problems.append(f"--{flag} {getattr(train, flag)}: must be at least 1")
    if train.learning_rate is not None and not 0 < train.learning_rate < 1:
        problems.append(f"--learning_rate {train.learning_rate}: must be within (0, 1)")
    if train.max_steps == 0 or (train.max_steps < 0 and train.num_train_epochs <= 0):
        problems.append("nothing to train: set --max_steps > 0 or --num_train_epochs > 0")
    try:
        from swift.train.strategy import strategy_kwargs

        strategy_kwargs(train.deepspeed, train.fsdp, None)  # a bad preset or a missing deepspeed fails here, early
    except (ConfigError, MissingBackendError) as e:
        problems.append(str(e))
    if args.tuner.quant_method is not None:
        from swift.tuners import quantization_config

        try:
            quantization_config(args.tuner)
        except (ConfigError, MissingBackendError) as e:
            problems.append(str(e))
    if args.tuner.lora_rank < 1:
        problems.append(f"--lora_rank {args.tuner.lora_rank}: must be at least 1")
    if problems:
        raise ConfigError("\n".join(problems))


def use_bf16(requested: bool | None, model: Any = None) -> bool:
    """bf16 autocast where the hardware runs it fast: CUDA with bf16, or a CPU with AMX / AVX512-BF16 and a model whose
    matmuls are wide enough to gain from it (see CPU_BF16_MIN_HIDDEN)."""
    import torch

    if requested is not None:
        return requested
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    return env.cpu_has_fast_bf16() and (hidden is None or hidden >= CPU_BF16_MIN_HIDDEN)


# On CPU, bf16 autocast's casts cost more than its matmuls save below this width (one thread, 2-layer llama, vocab
# 49k, 256 tokens, forward + backward: hidden 64 0.82x of fp32, 128 1.18x, 256 1.27x, 576 1.39x). Tiny test models
# therefore train in fp32, which also keeps multi-process runs equal to one process (bf16 rounds each rank's partial
# gradients on its own: 1.7e-4 loss gap after 4 steps on a 64-wide llama, 9.5e-7 in fp32).
CPU_BF16_MIN_HIDDEN = 128


@dataclass
class Run:
    """What every training command shares once its inputs are loaded: rows, model, template, run directory."""

    args: Any
    model: Any
    tokenizer: Any
    template: Any
    train_rows: Any
    val_rows: Any
    run_dir: Path
    flat: dict[str, Any]
    max_length: int
    prepared: Any = None  # the tuner's PreparedModel, once applied


def load_rows(args: Any, *, require_answer: bool = True) -> tuple[Any, Any]:
    """Training and validation rows from --dataset / --val_dataset / --split_dataset_ratio (a bad file fails in
    seconds, before any weights load)."""
    from swift.core.dataset import load_dataset

    data = args.data
    train_rows, val_rows = load_dataset(
        data.dataset, split_dataset_ratio=0.0 if data.val_dataset else data.split_dataset_ratio, strict=data.strict,
        seed=data.data_seed, num_proc=data.dataset_num_proc, streaming=data.streaming,
        model_name=data.model_name or None, model_author=data.model_author or None, require_answer=require_answer)
    if data.dataset_shuffle and not data.streaming:
        train_rows = train_rows.shuffle(seed=data.data_seed)
    if data.val_dataset:
        val_rows, _ = load_dataset(data.val_dataset, strict=data.strict, seed=data.data_seed,
                                   num_proc=data.dataset_num_proc, require_answer=require_answer)
    return train_rows, val_rows


def start_run(args: Any, command: str, *, pretrain: bool = False, require_answer: bool = True,
              num_labels: int | None = None) -> Run:
    """Check flags, load rows, model and template, create the run directory and write args.json there."""
    from transformers import set_seed

    from swift.core import get_model_tokenizer, load_custom_register
    from swift.core.template import get_template
    from swift.train.launch import shared_run_dir
    from swift.train.run_dir import ARGS_FILE, new_run_dir, write_json_atomic
    from swift.tuners import quantization_config

    check_args(args)
    load_custom_register(args.model.custom_register_path)
    set_seed(args.train.seed)
    tmpl = args.template
    max_length = tmpl.max_length or DEFAULT_MAX_LENGTH
    train_rows, val_rows = load_rows(args, require_answer=require_answer)
    model, tokenizer = get_model_tokenizer(
        args.model.model, args.model.torch_dtype, args.model.device_map, args.model.attn_impl,
        quantization_config(args.tuner),
        model_type=args.model.model_type, revision=args.model.model_revision, use_hf=args.model.use_hf,
        token=args.model.hub_token, trust_remote_code=args.model.trust_remote_code, num_labels=num_labels)
    template = get_template(
        tmpl.template, tokenizer, default_system=tmpl.system,
        max_length=None if tmpl.truncation_strategy == "delete" else max_length,
        truncation_strategy=tmpl.truncation_strategy, loss_scale="all" if pretrain else tmpl.loss_scale,
        enable_thinking=tmpl.enable_thinking)
    run_dir = shared_run_dir(
        lambda: new_run_dir(args.train.output_dir, args.model.model, add_version=args.train.add_version))
    flat = to_flat_dict(args) | {"run_dir": str(run_dir), "template_name": template.name, "command": command,
                                 "max_length": max_length, "world_size": env.world_size()}
    if is_main_process():
        write_json_atomic(run_dir / ARGS_FILE, flat)
    return Run(args, model, tokenizer, template, train_rows, val_rows, run_dir, flat, max_length)


def encode_rows(run: Run, rows: Any, encode: Any = None) -> Any:
    """Encode rows with the template (lazily with --lazy_tokenize); --truncation_strategy delete drops long rows."""
    from swift.core.dataset import encode_dataset

    if rows is None:
        return None
    data, tmpl = run.args.data, run.args.template
    return encode_dataset(rows, encode or run.template.encode, num_proc=data.dataset_num_proc,
                          max_length=run.max_length if tmpl.truncation_strategy == "delete" else None,
                          lazy=data.lazy_tokenize)


def check_not_empty(run: Run, dataset: Any) -> None:
    if not run.args.data.streaming and len(dataset) == 0:
        raise ConfigError(f"--max_length {run.max_length}: every training row is longer; raise it or use "
                          "--truncation_strategy left/right")


def total_steps(args: Any, n_rows: int | None, rows_per_step: int = 1) -> int:
    """Optimizer steps of the run: --max_steps, else epochs over n_rows (rows_per_step rows per batch item)."""
    targs = args.train
    if targs.max_steps > 0:
        return targs.max_steps
    per_step = targs.per_device_train_batch_size * targs.gradient_accumulation_steps * env.world_size()
    steps_per_epoch = max(1, math.ceil((n_rows or 1) * rows_per_step / per_step))
    return math.ceil(steps_per_epoch * targs.num_train_epochs)


def prepare_tuner(run: Run, steps: int) -> Any:
    """Apply --train_type to the run's model (use_cache off: packed rows need the mask built from position_ids)."""
    from swift.tuners import prepare_model

    prepared = prepare_model(run.model, run.args.tuner, total_steps=steps, seed=run.args.train.seed)
    run.model, run.prepared = prepared.model, prepared
    run.model.config.use_cache = False
    return prepared


def default_learning_rate(args: Any) -> float:
    return args.train.learning_rate or (
        1e-5 if args.tuner.train_type in ("full", "freeze", "lisa", "llamapro") else 1e-4)


def training_arguments(run: Run, steps: int, *, config_cls: Any = None, has_eval: bool = False,
                       **extra: Any) -> Any:
    """`TrainingArguments` (or a trl config class, with its own fields in `extra`) from the training flags."""
    import torch
    from transformers import TrainingArguments

    from swift.train.strategy import strategy_kwargs

    targs, data = run.args.train, run.args.data
    config_cls = config_cls or TrainingArguments
    bf16 = use_bf16(targs.bf16, run.model)
    strategy = strategy_kwargs(targs.deepspeed, targs.fsdp, run.model, bf16=bf16)
    return config_cls(
        output_dir=str(run.run_dir), num_train_epochs=targs.num_train_epochs, max_steps=steps,
        per_device_train_batch_size=targs.per_device_train_batch_size,
        per_device_eval_batch_size=targs.per_device_eval_batch_size,
        gradient_accumulation_steps=targs.gradient_accumulation_steps, learning_rate=default_learning_rate(run.args),
        lr_scheduler_type=targs.lr_scheduler_type, warmup_steps=targs.warmup_steps or targs.warmup_ratio,
        weight_decay=targs.weight_decay, max_grad_norm=targs.max_grad_norm, optim=targs.optim, seed=targs.seed,
        data_seed=data.data_seed, bf16=strategy.pop("bf16", bf16), fp16=bool(targs.fp16),
        **_checkpointing_kwargs(targs.gradient_checkpointing),
        logging_steps=targs.logging_steps, logging_first_step=True, save_strategy="steps",
        save_steps=targs.save_steps, save_total_limit=targs.save_total_limit, save_only_model=targs.save_only_model,
        eval_strategy="steps" if has_eval else "no", eval_steps=targs.eval_steps or targs.save_steps,
        report_to=[r for r in targs.report_to if r != "none"],  # tensorboard writes to <run>/runs/
        dataloader_num_workers=targs.dataloader_num_workers, remove_unused_columns=False,
        disable_tqdm=False, use_cpu=not torch.cuda.is_available(), use_liger_kernel=targs.use_liger_kernel,
        **strategy, **extra,
    )


def add_callbacks(trainer: Any, run: Run, prepared: Any) -> None:
    """The callbacks every command shares: the tuner's, a final checkpoint, plots and logging.jsonl."""
    from swift.train.callbacks import JsonlLogger, PlotOnSave, SaveAtEnd
    from swift.train.distributed import StrategyCheck, requested_strategy

    requested = requested_strategy(run.args.train.deepspeed, run.args.train.fsdp, env.world_size())
    for callback in [StrategyCheck(trainer, run.run_dir, requested), *prepared.callbacks, SaveAtEnd(),
                     PlotOnSave(run.run_dir), JsonlLogger(run.run_dir, lambda: trainer.tokens_seen)]:
        trainer.add_callback(callback)


def finish(trainer: Any, run: Run, train_rows: int) -> TrainResult:
    from swift.train.distributed import destroy_process_group

    output = trainer.train(resume_from_checkpoint=run.args.train.resume_from_checkpoint)
    destroy_process_group()  # every rank got here: leave the group together
    last = _last_checkpoint(run.run_dir)
    logger.info("last checkpoint: %s", last)
    return TrainResult(run.run_dir, last, train_rows, dict(output.metrics))


def run_sft(args: SftArguments, *, pretrain: bool = False) -> TrainResult:
    from swift.core.dataset import pack_dataset
    from swift.train.trainer import SwiftTrainer

    run = start_run(args, "pt" if pretrain else "sft", pretrain=pretrain)
    data, tmpl = args.data, args.template
    encode = functools.partial(run.template.encode, chosen_only=True)  # preference rows: their chosen answer
    train_set, val_set = encode_rows(run, run.train_rows, encode), encode_rows(run, run.val_rows, encode)
    check_not_empty(run, train_set)
    padding_free = tmpl.padding_free or tmpl.packing
    if tmpl.packing:
        train_set = pack_dataset(train_set, run.max_length, num_proc=data.dataset_num_proc)
    if padding_free:
        from swift.train.varlen import use_varlen_attention

        use_varlen_attention(run.model)  # each packed sequence attends to itself only, at its own cost
    steps = total_steps(args, None if data.streaming else len(train_set))
    prepared = prepare_tuner(run, steps)
    training_args = training_arguments(run, steps, has_eval=val_set is not None)
    logger.info("run directory %s; %s rows%s; bf16=%s padding_free=%s", run.run_dir,
                "streamed" if data.streaming else len(train_set), " (packed)" if tmpl.packing else "",
                training_args.bf16, padding_free)
    trainer = SwiftTrainer(
        model=run.model, args=training_args, train_dataset=train_set, eval_dataset=val_set,
        data_collator=_Collator(run.template, padding_free), processing_class=run.tokenizer, swift_args=run.flat)
    add_callbacks(trainer, run, prepared)
    return finish(trainer, run, 0 if data.streaming else len(train_set))


def _checkpointing_kwargs(enabled: bool) -> dict[str, Any]:
    """transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns until v6)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": enabled,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None}


def is_main_process() -> bool:
    if env.world_size() <= 1:
        return True
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


class _Collator:
    """Batches encoded rows with the template (drops bookkeeping columns such as `length`)."""

    def __init__(self, template: Any, padding_free: bool) -> None:
        self.template, self.padding_free = template, padding_free

    def __call__(self, rows: list[dict]) -> dict:
        if "position_ids" in rows[0]:  # packed bins: already padding-free, with their own sequence boundaries
            import torch

            return {key: torch.tensor([[t for row in rows for t in row[key]]], dtype=torch.long)
                    for key in ("input_ids", "labels", "position_ids")}
        keep = [{k: v for k, v in row.items() if k in ("input_ids", "labels")} for row in rows]
        return self.template.data_collator(keep, padding_free=self.padding_free)


def _last_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None
