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

from swift.core import ConfigError, check_data_args, check_rope_flags, check_template_args, env
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
    best_checkpoint: Path | None = None  # by --metric_for_best_model, when the run evaluated


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
    if not data.dataset and not train.cached_dataset:
        problems.append("--dataset is required (files, folders, hub ids or registered names), or --cached_dataset")
    for spec in [*train.cached_dataset, *train.cached_val_dataset]:
        if not (Path(spec.partition("#")[0]).expanduser() / "cached_dataset.json").is_file():
            flag = "--cached_dataset" if spec in train.cached_dataset else "--cached_val_dataset"
            problems.append(f"{flag} {spec}: not a cached dataset folder (no cached_dataset.json; write one with "
                            "swift export --to_cached_dataset true)")
    if (train.cached_dataset or train.cached_val_dataset) and (data.streaming or data.lazy_tokenize):
        problems.append("--cached_dataset is encoded already: drop --" + ("streaming" if data.streaming
                                                                           else "lazy_tokenize"))
    problems += check_data_args(data)
    problems += check_template_args(tmpl)
    problems += check_rope_flags(args.model.rope_scaling, args.model.max_model_len)
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
    problems += check_selection(args)
    if args.galore.use_galore:
        from swift.train.galore import check_galore  # (imports torch: only when asked for)

        problems += check_galore(args.galore, train, args.tuner, env.world_size())
    problems += check_strategy(train.deepspeed, train.fsdp)
    if train.use_liger_kernel:
        problems += check_liger()
    if problems:
        raise ConfigError("\n".join(problems))


def check_selection(args: SftArguments) -> list[str]:
    """--eval_strategy / --save_strategy / --load_best_model_at_end / --early_stop_interval problems."""
    train, data = args.train, args.data
    split = bool(data.val_dataset) or data.split_dataset_ratio > 0
    has_val = split or train.eval_use_evalscope  # something to evaluate: a validation split or benchmarks
    problems = []
    eval_strategy = train.eval_strategy or ("steps" if has_val else "no")
    wants_metric = train.load_best_model_at_end or train.save_strategy == "best" or train.early_stop_interval
    if wants_metric and not split and train.eval_use_evalscope and not train.metric_for_best_model:
        problems.append("--eval_use_evalscope without a validation split has no eval_loss to select on: name one of "
                        "the benchmark scores with --metric_for_best_model (eval_<dataset>_<metric>)")
    if eval_strategy != "no" and not has_val:
        problems.append(f"--eval_strategy {eval_strategy}: there is no validation split; give --val_dataset or "
                        "--split_dataset_ratio")
    elif wants_metric and eval_strategy == "no":
        flag = "--load_best_model_at_end" if train.load_best_model_at_end else (
            "--save_strategy best" if train.save_strategy == "best" else "--early_stop_interval")
        problems.append(f"{flag} needs evaluations: give --val_dataset or --split_dataset_ratio"
                        + (" and drop --eval_strategy no" if train.eval_strategy == "no" else ""))
    if train.load_best_model_at_end and train.save_strategy not in ("best", eval_strategy) and eval_strategy != "no":
        problems.append(f"--load_best_model_at_end: --save_strategy {train.save_strategy} must match --eval_strategy "
                        f"{eval_strategy} (or be best), so that each evaluated step has a checkpoint")
    eval_steps = train.eval_steps or train.save_steps
    if (train.load_best_model_at_end and train.save_strategy == "steps" and eval_strategy == "steps"
            and train.save_steps % eval_steps):
        problems.append(f"--load_best_model_at_end: --save_steps {train.save_steps} must be a multiple of "
                        f"--eval_steps {eval_steps}")
    if train.early_stop_interval is not None and train.early_stop_interval < 1:
        problems.append(f"--early_stop_interval {train.early_stop_interval}: must be at least 1")
    from swift.train.evalscope import check_evalscope_args

    problems += check_evalscope_args(train, use_hf=args.model.use_hf)
    if train.predict_with_generate and not (has_val or train.cached_val_dataset):
        problems.append("--predict_with_generate generates the validation answers: give --val_dataset or "
                        "--split_dataset_ratio")
    if train.optimizer == "muon" and (train.deepspeed or train.fsdp):
        problems.append("--optimizer muon with --deepspeed / --fsdp: Muon orthogonalises whole weight matrices, and "
                        "ZeRO / FSDP hand the optimizer flat shards; train with DDP (NPROC_PER_NODE) instead")
    if train.optim_args:
        from swift.train.optimizers import parse_optim_args  # (imports torch only with --optim_args)

        try:
            parse_optim_args(train.optim_args)
        except ConfigError as e:
            problems.append(str(e))
    if train.max_epochs is not None and train.max_epochs < 1:
        problems.append(f"--max_epochs {train.max_epochs}: must be at least 1")
    if train.max_new_tokens < 1:
        problems.append(f"--max_new_tokens {train.max_new_tokens}: must be at least 1")
    if train.group_by_length and (args.template.packing or data.streaming):
        problems.append("--group_by_length with " + ("--packing: packed bins are already full" if args.template.packing
                        else "--streaming: a stream is read in order, it cannot be sorted by length"))
    return problems


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
    train_rows, val_rows = (load_rows(args.data, require_answer=require_answer)  # a bad row fails before weights
                            if args.data.dataset else (None, None))
    model, tokenizer = load_model(args.model, quantization=quantization_config(args.tuner), num_labels=num_labels)
    template = build_template(args.template, tokenizer, pretrain=pretrain)
    template.bind_model(model)
    if args.train.router_aux_loss_coef:
        use_router_aux_loss(model, args.train.router_aux_loss_coef)
    run_dir = on_rank0(lambda: new_run_dir(args.train.output_dir, args.model.model, add_version=args.train.add_version))
    learning_rate = args.train.learning_rate or tuner.default_learning_rate
    flat = to_flat_dict(args) | {"run_dir": str(run_dir), "template_name": template.name, "command": command,
                            "max_length": max_length(args.template), "learning_rate": learning_rate,
                            "world_size": env.world_size()}
    if is_rank0():
        write_json_atomic(run_dir / ARGS_FILE, flat)
    return Run(args, model, tokenizer, template, train_rows, val_rows, run_dir, flat,
               max_length(args.template), learning_rate, padding_free(args, tuner))


def use_router_aux_loss(model: Any, coef: float) -> None:
    """--router_aux_loss_coef: the MoE router's load-balancing loss, weighted, joins the training loss."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if not hasattr(config, "router_aux_loss_coef"):
        raise ConfigError(f"--router_aux_loss_coef {coef}: {type(model).__name__} has no MoE router")
    for cfg in {id(c): c for c in (model.config, config)}.values():
        cfg.output_router_logits, cfg.router_aux_loss_coef = True, coef


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


def encoded_splits(run: Run, encode_fn: Any = None, *, template_mode: str = "train",
                   **encode_kwargs: Any) -> tuple[Any, Any]:
    """(train, val) encoded: --dataset / --val_dataset through the template (or `encode_fn(template, row)`), plus
    the --cached_dataset / --cached_val_dataset folders (checked against the template and their `template_mode`
    layout, long rows dropped as for fresh rows)."""
    from datasets import concatenate_datasets

    train, val = (encode(run, rows, encode_fn, **encode_kwargs) for rows in (run.train_rows, run.val_rows))
    targs = run.args.train
    for flag, specs, fresh in (("--cached_dataset", targs.cached_dataset, train),
                               ("--cached_val_dataset", targs.cached_val_dataset, val)):
        if not specs:
            continue
        from swift.core import load_cached_dataset

        cached = load_cached_dataset(specs, run.template, seed=run.args.data.data_seed, flag=flag,
                                     template_mode=template_mode)
        if run.args.template.truncation_strategy == "delete":
            cached = cached.filter(lambda n: n <= run.max_length, input_columns="length")
        if fresh is not None:
            cached = concatenate_datasets([fresh.select_columns(cached.column_names), cached])
        if flag == "--cached_dataset":
            train = cached  # in the order the export shuffled it into (and the trainer's sampler shuffles)
        else:
            val = cached
    if targs.cached_dataset and not targs.cached_val_dataset and val is None:
        val = _cached_val_split(run, template_mode)
    return train, val


def _cached_val_split(run: Run, template_mode: str) -> Any:
    """The `val/` splits the --cached_dataset folders carry (written from --split_dataset_ratio at export)."""
    from swift.core import load_cached_dataset

    if not all((Path(s.partition("#")[0]).expanduser() / "val").is_dir() for s in run.args.train.cached_dataset):
        return None
    return load_cached_dataset([s.partition("#")[0] for s in run.args.train.cached_dataset], run.template,
                               split="val", flag="--cached_dataset", template_mode=template_mode)


def longest_micro_batch(run: Run, dataset: Any) -> int | None:
    """Tokens of the costliest micro-batch of an encoded dataset: its `batch` longest rows (padding-free) or `batch`
    times the longest row (padded); None for a stream or a lazily encoded set."""
    import numpy as np

    names = getattr(dataset, "column_names", None)
    if not names or "length" not in names or len(dataset) == 0:
        return None
    lengths = np.sort(np.asarray(dataset["length"]))[::-1]
    batch = run.args.train.per_device_train_batch_size
    return int(lengths[:batch].sum()) if run.padding_free else int(lengths[0]) * batch


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
    per_batch = targs.per_device_train_batch_size * env.world_size()
    rows = n_rows * rows_per_step
    batches = rows // per_batch if targs.dataloader_drop_last else math.ceil(rows / per_batch)
    steps_per_epoch = max(1, math.ceil(batches / targs.gradient_accumulation_steps))
    return math.ceil(steps_per_epoch * targs.num_train_epochs)


def prepare_tuner(run: Run, steps: int, train_set: Any = None) -> PreparedModel:
    """Apply --train_type to the run's model (use_cache off: packed rows need the mask built from position_ids).
    `train_set`: the encoded training rows, for inits that look at data (--init_weights lora-ga)."""
    import itertools

    from swift.tuners import prepare_model

    sample_batches = None
    if train_set is not None:
        collator = Collator(run.template, run.padding_free)

        def sample_batches(batch_size: int, max_length: int, count: int):
            """The first `count` batches of the (seeded, shuffled) training rows, each row cut to `max_length`."""
            rows = iter(train_set)
            for _ in range(count):
                # media rows stay whole: cutting them could drop image tokens their pixel values need
                cut = () if run.template.is_multimodal else CUT_TO_LENGTH
                batch = [{k: v[:max_length] if isinstance(v, list) and k in cut else v for k, v in row.items()}
                         for row in itertools.islice(rows, batch_size)]
                if batch:
                    yield collator(batch)

    prepared = prepare_model(run.model, run.args.tuner, total_steps=steps, seed=run.args.train.seed,
                             learning_rate=run.learning_rate, sample_batches=sample_batches)
    run.model, run.prepared = prepared.model, prepared
    run.model.config.use_cache = False
    return prepared


def training_arguments(run: Run, steps: int, *, config_cls: type | None = None, has_eval: bool = False,
                       micro_batch_tokens: int | None = None, **extra: Any) -> TrainingArguments:
    """`TrainingArguments` (or a trl config class, with its own fields in `extra`) from the training flags.
    `micro_batch_tokens`: the longest micro-batch (default: batch size x max length), for the checkpointing rule."""
    import torch
    from transformers import TrainingArguments

    from swift.core import use_bf16
    from swift.train.memory import wants_checkpointing
    from swift.train.strategy import strategy_kwargs

    targs, data = run.args.train, run.args.data
    config_cls = config_cls or TrainingArguments
    model_config = run.model.config
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    bf16 = use_bf16(targs.bf16, hidden_size=getattr(text_config, "hidden_size", None))
    strategy = strategy_kwargs(targs.deepspeed, targs.fsdp, run.model, bf16=bf16)
    checkpointing = wants_checkpointing(targs.gradient_checkpointing, model_config,
                                        micro_batch_tokens or targs.per_device_train_batch_size * run.max_length)
    eval_strategy = targs.eval_strategy or ("steps" if has_eval else "no")
    metric = targs.metric_for_best_model
    if metric is None and (targs.load_best_model_at_end or targs.save_strategy == "best" or targs.early_stop_interval):
        metric = "rouge-l" if targs.predict_with_generate else "loss"
    optional = {k: v for k, v in dict(neftune_noise_alpha=targs.neftune_noise_alpha,
                                      ddp_find_unused_parameters=targs.ddp_find_unused_parameters,
                                      label_names=targs.label_names or None,
                                      greater_is_better=targs.greater_is_better).items() if v is not None}
    return config_cls(
        output_dir=str(run.run_dir), num_train_epochs=targs.num_train_epochs, max_steps=steps,
        per_device_train_batch_size=targs.per_device_train_batch_size,
        per_device_eval_batch_size=targs.per_device_eval_batch_size,
        gradient_accumulation_steps=targs.gradient_accumulation_steps, learning_rate=run.learning_rate,
        lr_scheduler_type=targs.lr_scheduler_type, warmup_steps=targs.warmup_steps or targs.warmup_ratio,
        weight_decay=targs.weight_decay, max_grad_norm=targs.max_grad_norm, optim=targs.optim,
        adam_beta1=targs.adam_beta1, adam_beta2=targs.adam_beta2, adam_epsilon=targs.adam_epsilon,
        optim_args=targs.optim_args, seed=targs.seed,
        data_seed=data.data_seed, bf16=strategy.pop("bf16", bf16), fp16=bool(targs.fp16),
        **_checkpointing_kwargs(checkpointing, targs.gradient_checkpointing_kwargs),
        logging_steps=targs.logging_steps, logging_first_step=True, save_strategy=targs.save_strategy,
        save_steps=targs.save_steps, save_total_limit=targs.save_total_limit, save_only_model=targs.save_only_model,
        eval_strategy=eval_strategy if has_eval else "no", eval_steps=targs.eval_steps or targs.save_steps,
        metric_for_best_model=metric if has_eval else None,
        load_best_model_at_end=targs.load_best_model_at_end and has_eval,
        dataloader_drop_last=targs.dataloader_drop_last,
        # unset, each config keeps its own order (KTO's is "sequential": its KL pairs are neighbours)
        **({"train_sampling_strategy": "group_by_length"} if targs.group_by_length else {}),
        report_to=[r for r in targs.report_to if r != "none"],  # tensorboard writes to <run>/runs/
        dataloader_num_workers=targs.dataloader_num_workers, remove_unused_columns=False,
        disable_tqdm=False, use_cpu=not torch.cuda.is_available(), use_liger_kernel=targs.use_liger_kernel,
        **strategy, **optional, **extra,
    )


def trainer_kwargs(run: Run) -> dict[str, Any]:
    """What every SwiftTrainerMixin trainer takes from the run: args.json for checkpoints, the tuner's lr factors."""
    return {"swift_args": run.flat, "lr_ratios": run.prepared.lr_ratios if run.prepared else None}


def add_callbacks(trainer: Any, run: Run) -> None:
    """The callbacks every command shares: the tuner's, a final checkpoint, plots and logging.jsonl."""
    from swift.train.callbacks import JsonlLogger, MaxEpochs, PlotOnSave, SaveAtEnd
    from swift.train.distributed import StrategyCheck, requested_strategy

    requested = requested_strategy(run.args.train.deepspeed, run.args.train.fsdp, env.world_size())
    tuner_callbacks = run.prepared.callbacks if run.prepared else []
    from swift.train.plugins import build_callbacks

    for callback in [StrategyCheck(trainer, run.run_dir, requested), *tuner_callbacks, SaveAtEnd(),
                     PlotOnSave(run.run_dir), JsonlLogger(run.run_dir, lambda: trainer.tokens_seen),
                     *([MaxEpochs(run.args.train.max_epochs)] if run.args.train.max_epochs else []),
                     *build_callbacks(run.args.train.callbacks)]:
        trainer.add_callback(callback)
    vit = run.args.train.vit_gradient_checkpointing
    if vit is None and run.args.tuner.freeze_vit is not False:
        vit = False  # a frozen tower: nothing to recompute (ms-swift's default)
    if vit is not None:
        from swift.train.callbacks import VisionCheckpointing

        trainer.add_callback(VisionCheckpointing(vit, run.args.train.gradient_checkpointing_kwargs))
    if run.args.train.early_stop_interval:
        from swift.train.callbacks import EarlyStop

        trainer.add_callback(EarlyStop(run.args.train.early_stop_interval))


def finish(trainer: Any, run: Run, train_rows: int) -> TrainResult:
    from swift.train.distributed import destroy_process_group

    output = trainer.train(resume_from_checkpoint=run.args.train.resume_from_checkpoint)
    rollout = getattr(trainer, "swift_rollout", None) or getattr(trainer, "rollout_func", None)  # (ours, or trl's)
    close = getattr(rollout, "close", None)
    if close is not None:
        close()  # a colocated vLLM leaves its process groups before ours go
    destroy_process_group()  # every rank got here: leave the group together
    last = last_checkpoint(run.run_dir)
    best = trainer.state.best_model_checkpoint
    logger.info("last checkpoint: %s%s", last, f"; best checkpoint: {best} ({trainer.args.metric_for_best_model} "
                f"{trainer.state.best_metric})" if best else "")
    if trainer.is_world_process_zero():
        from swift.train.callbacks import log_final

        log_final(run.run_dir, last_model_checkpoint=str(last) if last else None, best_model_checkpoint=best,
                  best_metric=trainer.state.best_metric, global_step=trainer.state.global_step)
    return TrainResult(run.run_dir, last, train_rows, dict(output.metrics), Path(best) if best else None)


def _checkpointing_kwargs(enabled: bool, kwargs: dict | None = None) -> dict[str, Any]:
    """transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns until v6)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": enabled,
            f"{prefix}_checkpointing_kwargs": ({"use_reentrant": False} | (kwargs or {})) if enabled else None}


class Collator:
    """Batches encoded rows with the template (drops bookkeeping columns such as `length`)."""

    def __init__(self, template: Any, padding_free: bool) -> None:
        self.template, self.padding_free = template, padding_free

    def __call__(self, rows: list[dict]) -> dict:
        if "position_ids" in rows[0]:  # packed bins: already padding-free, with their own sequence boundaries
            return self.template.collate_packed([{k: v for k, v in row.items() if v is not None} for row in rows])
        keep = [{k: v for k, v in row.items() if k not in BOOKKEEPING} for row in rows]
        return self.template.data_collator(keep, padding_free=self.padding_free)


# Token-aligned columns of encoded rows (cut together when a row is shortened).
CUT_TO_LENGTH = ("input_ids", "labels", "loss_scale", "position_ids")
# Columns of encoded rows that are not model inputs (multimodal rows carry theirs: pixel_values, image_grid_thw...).
BOOKKEEPING = ("length", "seq_lengths", "label")


def last_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None
