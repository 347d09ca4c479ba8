"""`megatron sft` / `megatron pt`: swift's rows on an mcore GPTModel with TP/PP/EP/DP, in swift's output layout.

Read top to bottom: check flags -> load data -> tokenizer and weights -> encode -> process groups -> run dir with
args.json -> model piece (+ LoRA) -> DDP + optimizer + scheduler -> (resume) -> steps -> checkpoints, log, plot.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from swift.core import ConfigError
from swift.core.arguments import to_flat_dict
from swift.megatron.arguments import MegatronArguments, check_train_args, uses_distributed_optimizer
from swift.megatron.convert import Stages
from swift.megatron.model import Parallel

logger = logging.getLogger(__name__)

@dataclass
class MegatronResult:
    run_dir: Path
    last_checkpoint: Path | None
    losses: dict[int, float] = field(default_factory=dict)
    eval_losses: dict[int, float] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # logged beside the loss (DPO's rewards...)


@dataclass
class Source:
    """Where the weights come from: an HF model (`--model`) and/or an mcore checkpoint (`--load`)."""

    model_id: str
    hf_config: Any
    tokenizer: Any
    hf_state: dict | None  # whole HF weights (None when the checkpoint holds them)
    checkpoint: Path | None
    meta: dict | None


def run_train(args: MegatronArguments, *, pretrain: bool = False) -> MegatronResult:

    from swift.core import load_rows
    from swift.megatron.convert import ModelShape
    from swift.megatron.parallel import megatron_session

    check_train_args(args, pretrain=pretrain)
    m = args.megatron
    parallel = Parallel(tp=m.tensor_model_parallel_size, pp=m.pipeline_model_parallel_size,
                        ep=m.expert_model_parallel_size, cp=m.context_parallel_size,
                        sequence_parallel=m.sequence_parallel,
                        stages=Stages(args.core.decoder_first_pipeline_num_layers,
                                      args.core.decoder_last_pipeline_num_layers))
    from swift.megatron.model import has_transformer_engine

    if parallel.sequence_parallel and parallel.tp > 1 and not has_transformer_engine():
        raise ConfigError("--sequence_parallel needs TransformerEngine's norms (CUDA with transformer_engine "
                          "installed); the local layer spec's torch norms do not support it")
    from swift.megatron.compat import is_cpu_only

    if parallel.ep > 1 and is_cpu_only():
        raise ConfigError("--expert_model_parallel_size > 1 needs CUDA: mcore's all-to-all token dispatcher uses "
                          "CUDA streams (the EP weight layout is still exported and converted on CPU)")
    # a bad data file fails here, before any weights load
    from swift.core import task_type_of

    # an encoder task's rows may have no assistant turn (a query and its documents)
    require_answer = task_type_of(args.model.task_type) == "causal_lm" and not _is_grpo(args)  # GRPO: prompts
    rows_raw, val_raw = load_rows(args.data, require_answer=require_answer) if args.data.dataset else (None, None)
    preference = _preference(args, rows_raw, val_raw)
    grpo = _grpo(args)
    dtype = _dtype(m.bf16)
    # megatron-core's own checks of --recompute_*, --moe_*, --fp8_*... run on the HF config, before weights load
    early = _read_hf_config(args)
    config = _core_config(args, early, parallel, dtype) if early is not None else None
    optimizer_kwargs = _optimizer_kwargs(args)
    if task_type_of(args.model.task_type) == "seq_cls" and rows_raw is not None:
        from swift.core import resolve_problem_type

        # recorded in args.json: infer / deploy read the head back with it
        args.model.problem_type = resolve_problem_type(args.model.problem_type, args.model.num_labels, rows_raw)
    source = load_source(args)
    _as_classifier(args, source)
    shape = ModelShape.from_hf(source.hf_config)
    if parallel.ep > 1 and parallel.tp > 1:
        raise ConfigError("--expert_model_parallel_size > 1 with --tensor_model_parallel_size > 1 is not supported")
    config = config or _core_config(args, source.hf_config, parallel, dtype)
    task = _task(args, source.tokenizer)
    encode = partial(_encode, args, tokenizer=source.tokenizer, pretrain=pretrain, task=task, pairs=preference,
                     prompts=grpo is not None)
    rows, template_name, max_length = encode(rows_raw)
    if grpo is not None:
        from swift.core import build_template

        grpo = dataclasses.replace(grpo, stop_token_ids=build_template(args.template, source.tokenizer).stop_token_ids)
    val_rows = None
    if val_raw is not None or m.cached_val_dataset or m.cached_dataset:
        val_rows = encode(val_raw, split="val")[0] or None
    command = "rlhf" if preference is not None or grpo is not None else "pt" if pretrain else "sft"
    with megatron_session(parallel, seed=m.seed):
        return _train(args, parallel, source, shape, CoreConfig(config, optimizer_kwargs),
                      Rows(rows, val_rows, task, preference, grpo), template_name=template_name,
                      max_length=max_length, command=command)


def _preference(args: MegatronArguments, rows_raw, val_raw) -> Any:
    """megatron rlhf: the DPO settings, once every row is known to have a rejected answer; None for sft / pt."""
    from swift.megatron.arguments import MegatronRlhfArguments

    if not isinstance(args, MegatronRlhfArguments) or args.rlhf.rlhf_type != "dpo":
        return None
    from swift.megatron.dpo import DpoSettings, check_preference_rows

    check_preference_rows(rows_raw, args.data)
    if val_raw is not None:
        check_preference_rows(val_raw, args.data, flag="--val_dataset" if args.data.val_dataset else "--dataset")
    return DpoSettings.of(args.rlhf, args.megatron.loss_type)


def _is_grpo(args: MegatronArguments) -> bool:
    return getattr(getattr(args, "rlhf", None), "rlhf_type", None) == "grpo"


def _grpo(args: MegatronArguments) -> Any:
    """megatron rlhf --rlhf_type grpo: its settings (defaults resolved); None otherwise."""
    if not _is_grpo(args):
        return None
    from swift.megatron.grpo import GrpoSettings

    return GrpoSettings.of(args)


@dataclass
class CoreConfig:
    """megatron-core's TransformerConfig and the OptimizerConfig keywords of --use_precision_aware_optimizer etc."""

    transformer: Any
    optimizer_kwargs: dict


def _optimizer_kwargs(args: MegatronArguments) -> dict:
    """OptimizerConfig keywords of the optimizer flags, checked by megatron-core now (before weights load)."""
    from megatron.core.optimizer import OptimizerConfig
    from swift.megatron.options import optimizer_options

    m = args.megatron
    distributed = uses_distributed_optimizer(m)
    kwargs = optimizer_options(args.core, use_distributed_optimizer=distributed)
    try:
        OptimizerConfig(optimizer="adam", use_distributed_optimizer=distributed, **kwargs)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"megatron-core refuses these optimizer options: {e}") from None
    return kwargs


@dataclass
class Rows:
    train: list[dict]
    val: list[dict] | None
    task: Any = None  # swift.megatron.tasks.MegatronTask of --task_type seq_cls / embedding / ...
    preference: Any = None  # megatron rlhf: swift.megatron.dpo.DpoSettings (rows are prompt / chosen / rejected ids)
    grpo: Any = None  # megatron rlhf --rlhf_type grpo: swift.megatron.grpo.GrpoSettings (rows are prompts)


def _task(args: MegatronArguments, tokenizer) -> Any:
    from swift.core import head_labels, task_type_of, yes_no_ids
    from swift.megatron.tasks import MegatronTask

    task = task_type_of(args.model.task_type)
    if task == "causal_lm":
        return None
    return MegatronTask(task, args.megatron.loss_type, yes_no_ids(tokenizer) if task == "generative_reranker" else None,
                        args.model.problem_type, head_labels(task, args.model.num_labels))


def _as_classifier(args: MegatronArguments, source: Source) -> None:
    """seq_cls / reranker: the HF config names the sequence-classification class (`ModelShape.from_hf` maps the
    head from it, and checkpoints' hf/config.json keep it), and a head the model did not have starts at zero, as
    `swift sft` starts it (swift.train.tasks.zero_new_head says why)."""
    from swift.core import head_labels

    labels = head_labels(args.model.task_type, args.model.num_labels)
    config = source.hf_config
    if labels is None:
        return
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        if source.hf_state is not None and "score.weight" in source.hf_state:
            source.hf_state["score.weight"] = source.hf_state["score.weight"].zero_()
        name = (architectures[0] if architectures else type(config).__name__.removesuffix("Config") + "ForCausalLM")
        config.architectures = [name.replace("ForCausalLM", "ForSequenceClassification")]
    config.num_labels = labels
    if args.model.problem_type:
        config.problem_type = args.model.problem_type


def _read_hf_config(args: MegatronArguments) -> Any:
    """The HF config from a local model folder or an mcore checkpoint's hf/ (no download, no weights); None when
    only loading the model finds it."""
    from transformers import AutoConfig

    from swift.megatron.checkpoint import find_checkpoint

    folder = Path(args.model.model).expanduser() if args.model.model else None
    if args.megatron.load and (folder is None or not folder.is_dir()):
        folder = find_checkpoint(args.megatron.load) / "hf"
    if folder is None or not (folder / "config.json").is_file():
        return None
    return _with_rope_flags(args, AutoConfig.from_pretrained(folder))


def _core_config(args: MegatronArguments, hf_config: Any, parallel: Parallel, dtype: Any) -> Any:
    from swift.megatron.convert import ModelShape
    from swift.megatron.model import has_transformer_engine, transformer_config
    from swift.megatron.options import transformer_options

    shape = ModelShape.from_hf(hf_config)
    options = transformer_options(args.core, has_moe=bool(shape.num_experts), use_te=has_transformer_engine())
    return transformer_config(hf_config, shape, parallel, dtype=dtype, options=options)


def _dtype(bf16: bool | None):
    import torch

    from swift.core import use_bf16

    # mcore trains bf16 weights, which it runs on CUDA only: no CPU default
    return torch.bfloat16 if use_bf16(bf16, cpu=False) else torch.float32


def load_source(args: MegatronArguments) -> Source:
    from transformers import AutoConfig, AutoTokenizer

    from swift.core import load_model
    from swift.megatron.checkpoint import find_checkpoint, read_meta

    checkpoint = meta = None
    model_id = args.model.model
    if args.megatron.load:
        checkpoint = find_checkpoint(args.megatron.load)
        meta = read_meta(checkpoint)
        model_id = model_id or meta.get("model")
    needs_hf_weights = checkpoint is None or meta.get("train_type") == "lora"
    if needs_hf_weights:
        if not model_id:
            raise ConfigError("--model is required: the LoRA checkpoint names no base model")
        # fp32 on CPU: the mcore model is built from these weights and cast to the run's dtype itself
        from swift.core import head_labels

        model, tokenizer = load_model(args.model, model=model_id, torch_dtype="float32", device_map="cpu",
                                      num_labels=head_labels(args.model.task_type, args.model.num_labels))
        state = {k: v.detach() for k, v in model.state_dict().items()}
        return Source(model_id, model.config, tokenizer, state, checkpoint, meta)
    hf_dir = checkpoint / "hf"
    return Source(model_id or str(checkpoint), _with_rope_flags(args, AutoConfig.from_pretrained(hf_dir)),
                  AutoTokenizer.from_pretrained(hf_dir), None, checkpoint, meta)


def _with_rope_flags(args: MegatronArguments, hf_config: Any) -> Any:
    """--rope_scaling / --max_model_len on an HF config read directly (load_model applies them itself); the mcore
    model takes the scalings `model.rope_settings` maps and refuses the others."""
    from swift.core import apply_rope_overrides, rope_overrides

    apply_rope_overrides(hf_config, rope_overrides(hf_config, args.model.rope_scaling, args.model.max_model_len))
    return hf_config


def _encode(args: MegatronArguments, rows_raw, *, tokenizer, pretrain: bool, split: str = "train",
            task: Any = None, pairs: Any = None, prompts: bool = False) -> tuple[list[dict], str, int]:
    """Encoded rows of one split: `rows_raw` through the template (a task's rows through its `TaskEncoder`,
    preference rows (`pairs`) as prompt / chosen / rejected ids), plus the --cached_dataset (train) or
    --cached_val_dataset / the cached folders' val/ (val) rows; packed with --packing."""
    from swift.core import TaskEncoder, build_template, encode_rows, max_length
    from swift.core.dataset import pack_dataset

    template = build_template(args.template, tokenizer, pretrain=pretrain)
    length = max_length(args.template)
    if prompts:  # GRPO: prompt rows (and their columns for the rewards), no cached or packed rows (refused)
        from swift.megatron.grpo import prompt_rows

        rows = prompt_rows(rows_raw, template) if rows_raw is not None else []
        if not rows and split == "train":
            raise ConfigError(f"--max_length {length}: every prompt is longer; raise it")
        return rows, template.name, length
    if pairs is not None:
        from swift.megatron.dpo import encode_pair

        encoder, extra = encode_pair, {}
    elif task is not None:
        encoder, extra = TaskEncoder(task.task_type, task.problem_type, task.num_labels), {}
    else:
        encoder, extra = None, {"chosen_only": True}  # a preference row trains on its chosen side (as swift sft)
    encoded = encode_rows(rows_raw, template, args.data, args.template, encode=encoder,
                          **extra) if rows_raw is not None else None
    cached = _cached_rows(args, template, length, split, template_mode="rlhf" if pairs is not None else "train")
    if cached is not None:
        from datasets import concatenate_datasets

        encoded = cached if encoded is None else concatenate_datasets(
            [encoded.select_columns(cached.column_names), cached])
    if encoded is None:
        return [], template.name, length
    if pairs is not None:
        rows = _pair_rows(encoded, length, packing=args.template.packing, split=split)
    else:
        if args.template.packing:
            encoded = pack_dataset(encoded, length, num_proc=args.data.dataset_num_proc)
        keep = ("input_ids", "sequences", "task_label") if task is not None else ("input_ids", "labels",
                                                                                   "position_ids")
        rows = [{k: row[k] for k in keep if k in row} for row in encoded]
    if not rows and split == "train":
        raise ConfigError(f"--max_length {length}: every training row is longer; raise it or use "
                          "--truncation_strategy left/right")
    return rows, template.name, length


def _pair_rows(encoded, length: int, *, packing: bool, split: str) -> list[dict]:
    """Preference rows whose two answers survived truncation (the others counted in one warning), packed in pairs
    with --packing."""
    from swift.megatron.dpo import has_answers, pack_pairs

    rows = [{k: list(row[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in encoded]
    kept = [row for row in rows if has_answers(row)]
    if len(kept) < len(rows):
        logger.warning("%s: dropped %d of %d preference rows whose chosen or rejected answer was truncated away",
                       split, len(rows) - len(kept), len(rows))
    return pack_pairs(kept, length) if packing else kept


def _cached_rows(args: MegatronArguments, template, length: int, split: str, *, template_mode: str = "train"):
    """The cached dataset rows of `split` (swift export --to_cached_dataset, in the --template_mode layout this run
    reads), long rows dropped under --truncation_strategy delete as fresh ones are; None without any."""
    from pathlib import Path

    from swift.core import load_cached_dataset

    m = args.megatron
    mode = {"template_mode": template_mode}
    if split == "train" and m.cached_dataset:
        cached = load_cached_dataset(m.cached_dataset, template, seed=args.data.data_seed, flag="--cached_dataset",
                                     **mode)
    elif split == "val" and m.cached_val_dataset:
        cached = load_cached_dataset(m.cached_val_dataset, template, seed=args.data.data_seed,
                                     flag="--cached_val_dataset", **mode)
    elif split == "val" and m.cached_dataset and not args.data.val_dataset and all(
            (Path(s.partition("#")[0]).expanduser() / "val").is_dir() for s in m.cached_dataset):
        cached = load_cached_dataset([s.partition("#")[0] for s in m.cached_dataset], template, split="val",
                                     flag="--cached_dataset", **mode)
    else:
        return None
    if args.template.truncation_strategy == "delete":
        cached = cached.filter(lambda n: n <= length, input_columns="length")
    return cached


def schedule(m, num_rows: int) -> tuple[int, float]:
    """(train_iters, warm-up steps): --train_iters, else ceil(--num_train_epochs x rows / --global_batch_size);
    --lr_warmup_fraction of the decay steps (train_iters), as Megatron-LM, else --lr_warmup_iters."""
    train_iters = m.train_iters or max(1, math.ceil(m.num_train_epochs * num_rows / m.global_batch_size))
    warmup = m.lr_warmup_iters if m.lr_warmup_fraction is None else m.lr_warmup_fraction * train_iters
    return train_iters, warmup


def _train(args, parallel: Parallel, source: Source, shape, core: CoreConfig, data: Rows, *, template_name: str,
           max_length: int, command: str) -> MegatronResult:
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from swift.core.run import ARGS_FILE, new_run_dir, on_rank0, plot_losses, write_json_atomic
    from swift.megatron.data import BatchPlan, step_batches
    from swift.megatron.model import build_gpt
    from swift.megatron.saving import SavePolicy, Saver, resume
    from swift.megatron.step import Objective, make_evaluator, reduce_loss
    from swift.tuners import get_tuner

    m, tuner, rows = args.megatron, args.tuner, data.train
    rank, dp, dp_rank = dist.get_rank(), ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    if m.global_batch_size % (m.micro_batch_size * dp):
        raise ConfigError(f"--global_batch_size {m.global_batch_size} must be a multiple of --micro_batch_size "
                          f"{m.micro_batch_size} x {dp} data-parallel ranks")
    # GRPO: batch sizes count completions, each prompt gives num_generations and each batch trains num_iterations
    units = len(rows) if data.grpo is None else len(rows) * data.grpo.num_generations * data.grpo.num_iterations
    train_iters, warmup = schedule(m, units)
    lr = m.lr or get_tuner(tuner.train_type).default_learning_rate
    run_dir = on_rank0(lambda: new_run_dir(m.save, source.model_id, add_version=m.add_version))
    flat = to_flat_dict(args) | {"model": source.model_id, "run_dir": str(run_dir), "template_name": template_name,
                                 "command": f"megatron {command}", "max_length": max_length, "lr": lr,
                                 "train_iters": train_iters, "train_rows": len(rows), "lr_warmup_steps": warmup,
                                 "world_size": dist.get_world_size(), "data_parallel_size": dp}
    if rank == 0:
        write_json_atomic(run_dir / ARGS_FILE, flat)

    config, dtype = core.transformer, core.transformer.params_dtype
    gpt = build_gpt(source.hf_config, shape, config, tp=parallel.tp)
    if data.task is not None:
        from swift.megatron.tasks import prepare_task_model

        prepare_task_model(gpt, data.task, dtype)
    lora_spec = load_weights(gpt, source, shape, parallel, tuner, seed=m.seed, dtype=dtype)
    if data.task is not None:
        from swift.megatron.tasks import after_weights_load

        after_weights_load(gpt, data.task)
    gpt.to(dtype)
    if torch.cuda.is_available():
        gpt.cuda(torch.cuda.current_device())
    preference = None
    if data.preference is not None:  # before DDP and the first step: a copy of the reference takes these weights
        from swift.megatron.dpo import prepare_dpo

        preference = prepare_dpo(data.preference, args, source, gpt, shape, parallel, config, lora_spec=lora_spec)
    elif data.grpo is not None:
        from swift.megatron.grpo_run import prepare_grpo

        preference = prepare_grpo(data.grpo, rows, args, source, gpt, shape, parallel, config, lora_spec=lora_spec)
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=m.overlap_grad_reduce,
                                               overlap_param_gather=m.overlap_param_gather,
                                               use_distributed_optimizer=uses_distributed_optimizer(m),
                                               check_for_nan_in_grad=False, bucket_size=None)
    model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=gpt)
    optimizer_config = OptimizerConfig(
        optimizer="sgd" if m.optimizer == "sgd" else "adam", lr=lr, min_lr=m.min_lr, weight_decay=m.weight_decay,
        adam_beta1=m.adam_beta1, adam_beta2=m.adam_beta2, adam_eps=m.adam_eps, sgd_momentum=m.sgd_momentum,
        clip_grad=m.clip_grad, bf16=dtype == torch.bfloat16, params_dtype=dtype,
        use_distributed_optimizer=uses_distributed_optimizer(m), **core.optimizer_kwargs)
    if m.optimizer in ("muon", "dist_muon"):
        from swift.megatron.muon import MuonSettings, build

        optimizer = build(model, optimizer_config, shape, MuonSettings(
            m.muon_momentum, m.muon_use_nesterov, m.muon_scale_mode, m.muon_extra_scale_factor, m.muon_num_ns_steps,
            m.muon_split_qkv, m.muon_tp_mode), name=m.optimizer, lr=lr, weight_decay=m.weight_decay)
    else:
        optimizer = get_megatron_optimizer(optimizer_config, [model])
    config.no_sync_func, config.finalize_model_grads_func = model.no_sync, finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0 if warmup else lr, max_lr=lr, min_lr=m.min_lr, lr_warmup_steps=warmup,
        lr_decay_steps=max(train_iters, warmup + 1), lr_decay_style=m.lr_decay_style, start_wd=m.weight_decay,
        end_wd=m.weight_decay, wd_incr_steps=train_iters, wd_incr_style="constant")
    start = 0
    if source.checkpoint is not None:
        start = resume(source.checkpoint, source.meta or {}, m, optimizer, scheduler, parallel)

    from swift.megatron.data import row_length

    plan = BatchPlan(m.global_batch_size, m.micro_batch_size, dp, dp_rank, seed=args.data.data_seed,
                     pad_multiple=parallel.tp if config.sequence_parallel else 1,
                     lengths=[row_length(r) for r in data.train] if m.group_by_length else None,
                     task=data.task, pairs=data.preference is not None)
    forward_backward = get_forward_backward_func()
    if data.grpo is not None:
        from swift.megatron.grpo_run import RolloutContext

        context = RolloutContext(shape, parallel, lora_spec, source.hf_config, source.tokenizer, plan, m.seed, run_dir,
                                 dtype, gathered=partial(_params_gathered, model),
                                 vllm=_vllm_rollouts(args, source, max_length, dtype))
        objective = preference.objective(model, gpt, forward_backward, context)
    else:
        objective = Objective() if preference is None else preference.objective(model, gpt, forward_backward)
    evaluate = make_evaluator(m, data.val, plan, model, forward_backward, objective)
    log_path, losses, eval_losses, metrics, last = run_dir / "logging.jsonl", {}, {}, {}, None
    saver = Saver(run_dir, gpt, optimizer, scheduler, parallel, source.hf_config, source.tokenizer,
                  meta={"train_type": tuner.train_type, "model": source.model_id,
                        "lora": lora_spec.to_dict() if lora_spec else None, "family": shape.family,
                        "use_distributed_optimizer": uses_distributed_optimizer(m), "optimizer": m.optimizer,
                        **(preference.meta if preference is not None else {})},
                  policy=SavePolicy(save_optim=not m.no_save_optim, save_rng=not m.no_save_rng,
                                    save_safetensors=m.save_safetensors, merge_lora=m.merge_lora,
                                    total_limit=m.save_total_limit),
                  model_args=dataclasses.replace(args.model, model=source.model_id))
    logger.info("run directory %s; %d rows; %d steps of %d rows (warm-up %g); tp=%d pp=%d ep=%d dp=%d; %s",
                run_dir, len(rows), train_iters, m.global_batch_size, warmup, parallel.tp, parallel.pp, parallel.ep,
                dp, dtype)
    clock, tokens_seen, window_tokens = time.perf_counter(), 0, 0
    batches = objective.batches(start, train_iters) if objective.batches is not None else step_batches(
        rows, plan, start, train_iters, num_workers=m.dataloader_num_workers)
    for step, (micro, seq_length) in zip(range(start, train_iters), batches, strict=True):
        if objective.prepare is not None:
            objective.prepare(micro, seq_length)  # DPO: the reference's log-probabilities into each micro-batch
        model.zero_grad_buffer()
        optimizer.zero_grad()
        out = forward_backward(forward_step_func=objective.forward_step, data_iterator=iter(micro), model=[model],
                               num_microbatches=len(micro), seq_length=seq_length,
                               micro_batch_size=micro[0]["tokens"].shape[0], forward_only=False)
        step_lr = optimizer.param_groups[0]["lr"]  # the rate this step used (the scheduler moves it next)
        _, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        loss = reduce_loss(out)
        step_metrics = objective.metrics(out) if objective.metrics is not None else {}
        iteration = step + 1
        batch_tokens = objective.step_tokens(step) if objective.step_tokens is not None else _global_tokens(
            rows, step, plan)
        tokens_seen, window_tokens = tokens_seen + batch_tokens, window_tokens + batch_tokens
        losses[iteration] = loss
        if step_metrics:
            metrics[iteration] = step_metrics
        if iteration == 1 or iteration % m.log_interval == 0 or iteration == train_iters:
            now = time.perf_counter()
            row = {"step": iteration, "loss": round(loss, 8), **{k: round(v, 8) for k, v in step_metrics.items()},
                   "lr": step_lr, "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),
                   "tokens_per_second": round(window_tokens / max(now - clock, 1e-9), 2), "tokens_seen": tokens_seen}
            clock, window_tokens = now, 0
            if rank == 0:
                _append_log(log_path, row)
                logger.info("step %d/%d loss %.6f%s lr %.3g grad_norm %s", iteration, train_iters, loss,
                            "".join(f" {k} {v:.4f}" for k, v in step_metrics.items()), row["lr"], row["grad_norm"])
        if evaluate is not None and (iteration % evaluate.interval == 0 or iteration == train_iters):
            scores = evaluate()  # its forward passes' hooks gather overlapped parameters
            eval_losses[iteration] = scores["eval_loss"]
            if rank == 0:
                _append_log(log_path, {"step": iteration, **{k: round(v, 8) for k, v in scores.items()}})
                logger.info("step %d/%d %s", iteration, train_iters,
                            " ".join(f"{k} {v:.6f}" for k, v in scores.items()))
        if iteration % m.save_interval == 0 or iteration == train_iters:
            with _params_gathered(model):
                last = saver(iteration)
            if rank == 0:
                plot_losses(run_dir)
    logger.info("last checkpoint: %s", last)
    return MegatronResult(run_dir, last, losses, eval_losses, metrics)


def _vllm_rollouts(args, source: Source, max_length: int, dtype) -> Any:
    """--use_vllm: a factory of the colocated vLLM engine (built where rollouts run); None otherwise."""
    rlhf = args.rlhf
    if not rlhf.use_vllm:
        return None
    from swift.core import build_template
    from swift.megatron.grpo_vllm import VllmRollouts, engine_kwargs

    info = getattr(source.tokenizer, "swift_model_info", None)
    if info is not None:
        model_dir = str(info.model_dir)
    elif source.checkpoint is not None and source.hf_state is None:
        model_dir = str(source.checkpoint / "hf")  # config and tokenizer: vLLM starts on dummy weights
    else:
        model_dir = source.model_id
    kwargs = engine_kwargs(rlhf, max_length=max_length,
                           max_positions=getattr(source.hf_config, "max_position_embeddings", None),
                           seed=args.megatron.seed, dtype=dtype)
    template = build_template(args.template, source.tokenizer)
    return partial(VllmRollouts, model_dir, template, kwargs, sleep_level=rlhf.sleep_level)


@contextmanager
def _params_gathered(model):
    """With --overlap_param_gather the step leaves other ranks' parameter updates to the next forward's hooks:
    gather them now, and switch the hooks off while saving, as Megatron-LM does."""
    if not model.ddp_config.overlap_param_gather:
        yield
        return
    model.disable_forward_pre_hook(param_sync=True)
    try:
        yield
    finally:
        model.enable_forward_pre_hook()


def load_weights(gpt, source: Source, shape, parallel: Parallel, tuner, *, seed: int, dtype) -> Any:
    """Fill this rank's piece: base weights from HF or the checkpoint (re-sharded to this layout), LoRA from the
    checkpoint or a fresh seeded draw. Returns the LoRA spec (None for full training)."""
    from swift.megatron.checkpoint import read_pieces
    from swift.megatron.convert import hf_to_mcore, merge, pad_vocab, padded_vocab_size, shard
    from swift.megatron.lora import LoraSpec, attach_lora, init_lora_full, resolve_targets
    from swift.megatron.model import load_local, rank_position

    meta = source.meta or {}
    pieces = merge_meta = None
    if source.checkpoint is not None:
        pieces = read_pieces(source.checkpoint)
        merge_meta = {"tp": meta["tp"], "pp": meta["pp"], "ep": meta.get("ep", 1),
                      "stages": Stages.from_meta(meta)}
    full = hf_to_mcore(source.hf_state, shape) if source.hf_state is not None else {}
    lora_full = {}
    if pieces is not None:
        saved = merge(pieces, shape, **merge_meta)
        lora_full = {k: v for k, v in saved.items() if ".lora_" in k}
        full.update({k: v for k, v in saved.items() if ".lora_" not in k})
    spec = None
    if tuner.train_type == "lora":
        if meta.get("lora"):
            saved_spec = meta["lora"]
            spec = LoraSpec(saved_spec["rank"], saved_spec["alpha"], tuner.lora_dropout, tuple(saved_spec["targets"]))
        else:
            spec = LoraSpec(tuner.lora_rank, tuner.lora_alpha, tuner.lora_dropout,
                            resolve_targets(tuner.target_modules))
            lora_full = init_lora_full(shape, spec, seed)
        attach_lora(gpt, spec, dtype)
    elif lora_full:
        raise ConfigError("--load holds a LoRA checkpoint: pass --train_type lora to continue it, or export it "
                          "merged first (megatron export --to_hf true)")
    full = pad_vocab(full, padded_vocab_size(shape.vocab_size, parallel.tp), head=bool(shape.head)) | lora_full
    load_local(gpt, shard(full, shape, tp=parallel.tp, pp=parallel.pp, ep=parallel.ep,
                          stages=parallel.stages, **rank_position()))
    return spec


def _global_tokens(rows, step: int, plan) -> int:
    from swift.megatron.data import global_batch_indices
    from swift.megatron.dpo import pair_tokens
    from swift.megatron.tasks import row_tokens

    count = pair_tokens if plan.pairs else row_tokens
    return sum(count(rows[i]) for i in global_batch_indices(len(rows), step, plan))


def _append_log(path: Path, row: dict) -> None:
    import json
    import resource

    # swift.train.callbacks has the same one-liner, but importing it pulls transformers' Trainer stack (~20 s CPU)
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
