"""The training recipe every trainer command shares (`swift sft`, `swift pt`, `swift rlhf`), read top to bottom:

    check_args(args)                      flags and files, all problems at once, before anything heavy is imported
    run = start_run(args, "sft")          rows -> model + tokenizer -> template -> run dir with args.json
    train = encode(run, run.train_rows)   template tokens (lazily with --lazy_tokenize), long rows dropped
    prepared = prepare_tuner(run, steps)  --train_type applied
    config = training_arguments(run, steps)
    trainer = ...; add_callbacks(trainer, run); return finish(trainer, run, n_rows)

Defaults that depend on other flags are resolved here once: the learning rate (the tuner's), bf16 (the hardware's),
the max length (core's `max_length`), padding-free (off for tuners that cannot keep packed rows apart).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift.core import ConfigError, check_data_args, env
from swift.train.arguments import SftArguments

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments

    from swift.core import Template
    from swift.tuners import PreparedModel, TunerMeta

logger = logging.getLogger(__name__)

@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path | None
    train_rows: int
    metrics: dict[str, float]


@dataclass
class Run:
    """A training run once its inputs are loaded: what every command's trainer is built from."""

    args: SftArguments  # (PtArguments and RlhfArguments are SftArguments)
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    template: Template
    train_rows: Dataset | IterableDataset
    val_rows: Dataset | None
    run_dir: Path
    flat: dict[str, object]  # what args.json holds (secrets left out)
    max_length: int
    learning_rate: float
    padding_free: bool
    prepared: PreparedModel | None = None


def check_args(args: SftArguments, *, problems: list[str] | None = None) -> None:
    """Everything that can be checked before torch, a model or a dataset loads, all problems at once (plus the
    caller's `problems`). A missing file is reported in about a second."""
    from swift.tuners import check_tuner_args, get_tuner

    problems = list(problems or [])
    data, tmpl, train = args.data, args.template, args.train
    if not args.model.model:
        problems.append("--model is required (a hub id or a local directory)")
    if not data.dataset:
        problems.append("--dataset is required (files, folders, hub ids or registered names)")
    problems += check_data_args(data)
    if tmpl.max_length is not None and tmpl.max_length < 8:
        problems.append(f"--max_length {tmpl.max_length}: too short to hold a conversation")
    for flag in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        if getattr(train, flag) < 1:
            problems.append(f"--{flag} {getattr(train, flag)}: must be at least 1")
    if train.learning_rate is not None and not 0 < train.learning_rate < 1:
        problems.append(f"--learning_rate {train.learning_rate}: must be within (0, 1)")
    if train.max_steps == 0 or (train.max_steps < 0 and train.num_train_epochs <= 0):
        problems.append("nothing to train: set --max_steps > 0 or --num_train_epochs > 0")
    if data.streaming and train.max_steps < 0:
        problems.append("--streaming true needs --max_steps N: a stream has no length, so epochs cannot be counted "
                        "(or drop --streaming to train --num_train_epochs over the whole dataset)")
    if tmpl.packing and data.lazy_tokenize:
        problems.append("--packing true with --lazy_tokenize true: packing plans its bins from every row's length, "
                        "so it encodes up front; drop --lazy_tokenize (or use --streaming true --packing true, which "
                        "packs rows as they are read)")
    problems += check_tuner_args(args.tuner)
    try:
        tuner = get_tuner(args.tuner.train_type)
    except ConfigError:
        tuner = None  # check_tuner_args reported it
    if tuner is not None and not tuner.padding_free and tmpl.packing:
        problems.append(f"--packing true with --train_type {tuner.name}: peft drops position_ids for "
                        f"{tuner.name} tuning, so packed rows would attend to each other; drop --packing")
    problems += check_strategy(train.deepspeed, train.fsdp)
    if train.use_liger_kernel:
        problems += check_liger()
    if problems:
        raise ConfigError("\n".join(problems))


def check_strategy(deepspeed: str | None, fsdp: str | None) -> list[str]:
    """--deepspeed / --fsdp problems: both given, a bad preset or file, deepspeed not installed."""
    import importlib.util

    from swift.train.strategy import deepspeed_config, fsdp_preset

    if deepspeed and fsdp:
        return ["--deepspeed and --fsdp are two ways to shard training: choose one"]
    try:
        if deepspeed:
            deepspeed_config(deepspeed)
            if importlib.util.find_spec("deepspeed") is None:
                return ['--deepspeed: deepspeed is not installed; install it with: pip install "swift-train[deepspeed]"']
        if fsdp:
            fsdp_preset(fsdp)
    except ConfigError as e:
        return [str(e)]
    return []


def check_liger() -> list[str]:
    import importlib.util

    import torch

    if importlib.util.find_spec("liger_kernel") is None:
        return ['--use_liger_kernel: liger-kernel is not installed; install it with: pip install "swift-train[liger]"']
    if not torch.cuda.is_available():
        return ["--use_liger_kernel: Liger's kernels are Triton kernels for CUDA GPUs; this machine has none"]
    return []


def start_run(args: SftArguments, command: str, *, pretrain: bool = False, require_answer: bool = True,
              num_labels: int | None = None) -> Run:
    """Rows, model, template and the run directory with args.json (the caller ran `check_args`)."""
    from transformers import set_seed

    from swift.core import build_template, load_model, load_rows, max_length
    from swift.core.arguments import to_flat_dict
    from swift.core.run import ARGS_FILE, is_rank0, new_run_dir, on_rank0, write_json_atomic
    from swift.tuners import get_tuner, quantization_config

    set_seed(args.train.seed)
    tuner = get_tuner(args.tuner.train_type)
    train_rows, val_rows = load_rows(args.data, require_answer=require_answer)  # a bad row fails before weights
    model, tokenizer = load_model(args.model, quantization=quantization_config(args.tuner), num_labels=num_labels)
    template = build_template(args.template, tokenizer, pretrain=pretrain)
    template.bind_model(model)
    run_dir = on_rank0(lambda: new_run_dir(args.train.output_dir, args.model.model, add_version=args.train.add_version))
    learning_rate = args.train.learning_rate or tuner.default_learning_rate
    flat = to_flat_dict(args) | {"run_dir": str(run_dir), "template_name": template.name, "command": command,
                            "max_length": max_length(args.template), "learning_rate": learning_rate,
                            "world_size": env.world_size()}
    if is_rank0():
        write_json_atomic(run_dir / ARGS_FILE, flat)
    return Run(args, model, tokenizer, template, train_rows, val_rows, run_dir, flat,
               max_length(args.template), learning_rate, padding_free(args, tuner))


def padding_free(args: SftArguments, tuner: TunerMeta) -> bool:
    """--padding_free / --packing, unless the tuner cannot keep packed rows apart (then: padded, with a notice)."""
    wanted = args.template.padding_free or args.template.packing
    if wanted and not tuner.padding_free:
        logger.warning("--train_type %s: padding-free batches turned off (peft drops position_ids for %s tuning, "
                       "so flattened rows would attend to each other); batches are padded", tuner.name, tuner.name)
        return False
    return wanted


def encode(run: Run, rows: Any, encode_fn: Any = None, **encode_kwargs: Any) -> Any:
    """Rows encoded with the run's template (or `encode_fn(template, row)`), long rows dropped under delete."""
    from swift.core import encode_rows

    return encode_rows(rows, run.template, run.args.data, run.args.template, encode=encode_fn, **encode_kwargs)


def check_not_empty(run: Run, dataset: Any) -> None:
    if not run.args.data.streaming and len(dataset) == 0:
        raise ConfigError(f"--max_length {run.max_length}: every training row is longer; raise it or use "
                          "--truncation_strategy left/right")


def total_steps(args: SftArguments, n_rows: int | None, rows_per_step: int = 1) -> int:
    """Optimizer steps of the run: --max_steps, else epochs over n_rows (rows_per_step rows per batch item)."""
    targs = args.train
    if targs.max_steps > 0:
        return targs.max_steps
    if n_rows is None:  # check_args refuses a stream without --max_steps
        raise ConfigError("--streaming true needs --max_steps N")
    per_step = targs.per_device_train_batch_size * targs.gradient_accumulation_steps * env.world_size()
    steps_per_epoch = max(1, math.ceil(n_rows * rows_per_step / per_step))
    return math.ceil(steps_per_epoch * targs.num_train_epochs)


def prepare_tuner(run: Run, steps: int) -> PreparedModel:
    """Apply --train_type to the run's model (use_cache off: packed rows need the mask built from position_ids)."""
    from swift.tuners import prepare_model

    prepared = prepare_model(run.model, run.args.tuner, total_steps=steps, seed=run.args.train.seed,
                             learning_rate=run.learning_rate)
    run.model, run.prepared = prepared.model, prepared
    run.model.config.use_cache = False
    return prepared


def training_arguments(run: Run, steps: int, *, config_cls: type | None = None, has_eval: bool = False,
                       **extra: Any) -> TrainingArguments:
    """`TrainingArguments` (or a trl config class, with its own fields in `extra`) from the training flags."""
    import torch
    from transformers import TrainingArguments

    from swift.core import use_bf16
    from swift.train.strategy import strategy_kwargs

    targs, data = run.args.train, run.args.data
    config_cls = config_cls or TrainingArguments
    model_config = run.model.config
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    bf16 = use_bf16(targs.bf16, hidden_size=getattr(text_config, "hidden_size", None))
    strategy = strategy_kwargs(targs.deepspeed, targs.fsdp, run.model, bf16=bf16)
    return config_cls(
        output_dir=str(run.run_dir), num_train_epochs=targs.num_train_epochs, max_steps=steps,
        per_device_train_batch_size=targs.per_device_train_batch_size,
        per_device_eval_batch_size=targs.per_device_eval_batch_size,
        gradient_accumulation_steps=targs.gradient_accumulation_steps, learning_rate=run.learning_rate,
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


def trainer_kwargs(run: Run) -> dict[str, Any]:
    """What every SwiftTrainerMixin trainer takes from the run: args.json for checkpoints, the tuner's lr factors."""
    return {"swift_args": run.flat, "lr_ratios": run.prepared.lr_ratios if run.prepared else None}


def add_callbacks(trainer: Any, run: Run) -> None:
    """The callbacks every command shares: the tuner's, a final checkpoint, plots and logging.jsonl."""
    from swift.train.callbacks import JsonlLogger, PlotOnSave, SaveAtEnd
    from swift.train.distributed import StrategyCheck, requested_strategy

    requested = requested_strategy(run.args.train.deepspeed, run.args.train.fsdp, env.world_size())
    tuner_callbacks = run.prepared.callbacks if run.prepared else []
    for callback in [StrategyCheck(trainer, run.run_dir, requested), *tuner_callbacks, SaveAtEnd(),
                     PlotOnSave(run.run_dir), JsonlLogger(run.run_dir, lambda: trainer.tokens_seen)]:
        trainer.add_callback(callback)


def finish(trainer: Any, run: Run, train_rows: int) -> TrainResult:
    from swift.train.distributed import destroy_process_group

    output = trainer.train(resume_from_checkpoint=run.args.train.resume_from_checkpoint)
    rollout = getattr(trainer, "swift_rollout", None) or getattr(trainer, "rollout_func", None)  # (ours, or trl's)
    close = getattr(rollout, "close", None)
    if close is not None:
        close()  # a colocated vLLM leaves its process groups before ours go
    destroy_process_group()  # every rank got here: leave the group together
    last = last_checkpoint(run.run_dir)
    logger.info("last checkpoint: %s", last)
    return TrainResult(run.run_dir, last, train_rows, dict(output.metrics))


def _checkpointing_kwargs(enabled: bool) -> dict[str, Any]:
    """transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns until v6)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": enabled,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None}


class Collator:
    """Batches encoded rows with the template (drops bookkeeping columns such as `length`)."""

    def __init__(self, template: Any, padding_free: bool) -> None:
        self.template, self.padding_free = template, padding_free

    def __call__(self, rows: list[dict]) -> dict:
        if "position_ids" in rows[0]:  # packed bins: already padding-free, with their own sequence boundaries
            return self.template.collate_packed([{k: v for k, v in row.items() if v is not None} for row in rows])
        keep = [{k: v for k, v in row.items() if k not in BOOKKEEPING} for row in rows]
        return self.template.data_collator(keep, padding_free=self.padding_free)


# Columns of encoded rows that are not model inputs (multimodal rows carry theirs: pixel_values, image_grid_thw...).
BOOKKEEPING = ("length", "seq_lengths", "label")


def last_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None
