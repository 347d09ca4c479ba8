"""`megatron sft` / `megatron pt`: swift's rows on an mcore GPTModel with TP/PP/EP/DP, in swift's output layout.

Read top to bottom: check flags -> load data -> tokenizer and weights -> encode -> process groups -> run dir with
args.json -> model piece (+ LoRA) -> DDP + optimizer + scheduler -> (resume) -> steps -> checkpoints, log, plot.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from swift.core import ConfigError
from swift.core.arguments import to_flat_dict
from swift.megatron.arguments import MegatronArguments, check_train_args
from swift.megatron.model import Parallel

logger = logging.getLogger(__name__)

@dataclass
class MegatronResult:
    run_dir: Path
    last_checkpoint: Path | None
    losses: dict[int, float] = field(default_factory=dict)


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

    check_train_args(args)
    m = args.megatron
    parallel = Parallel(tp=m.tensor_model_parallel_size, pp=m.pipeline_model_parallel_size,
                        ep=m.expert_model_parallel_size, cp=m.context_parallel_size,
                        sequence_parallel=m.sequence_parallel)
    from swift.megatron.model import has_transformer_engine

    if parallel.sequence_parallel and parallel.tp > 1 and not has_transformer_engine():
        raise ConfigError("--sequence_parallel needs TransformerEngine's norms (CUDA with transformer_engine "
                          "installed); the local layer spec's torch norms do not support it")
    from swift.megatron.compat import is_cpu_only

    if parallel.ep > 1 and is_cpu_only():
        raise ConfigError("--expert_model_parallel_size > 1 needs CUDA: mcore's all-to-all token dispatcher uses "
                          "CUDA streams (the EP weight layout is still exported and converted on CPU)")
    rows_raw, _ = load_rows(args.data)  # a bad data file fails here, before any weights load
    source = _load_source(args)
    shape = ModelShape.from_hf(source.hf_config)
    if parallel.ep > 1 and parallel.tp > 1:
        raise ConfigError("--expert_model_parallel_size > 1 with --tensor_model_parallel_size > 1 is not supported")
    rows, template_name, max_length = _encode(args, rows_raw, source.tokenizer, pretrain=pretrain)
    dtype = _dtype(m.bf16)
    with megatron_session(parallel, seed=m.seed):
        return _train(args, parallel, source, shape, rows, dtype=dtype, template_name=template_name,
                      max_length=max_length, command="pt" if pretrain else "sft")


def _dtype(bf16: bool | None):
    import torch

    from swift.core import use_bf16

    # mcore trains bf16 weights, which it runs on CUDA only: no CPU default
    return torch.bfloat16 if use_bf16(bf16, cpu=False) else torch.float32


def _load_source(args: MegatronArguments) -> Source:
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
        model, tokenizer = load_model(args.model, model=model_id, torch_dtype="float32", device_map="cpu")
        state = {k: v.detach() for k, v in model.state_dict().items()}
        return Source(model_id, model.config, tokenizer, state, checkpoint, meta)
    hf_dir = checkpoint / "hf"
    return Source(model_id or str(checkpoint), AutoConfig.from_pretrained(hf_dir),
                  AutoTokenizer.from_pretrained(hf_dir), None, checkpoint, meta)


def _encode(args: MegatronArguments, rows_raw, tokenizer, *, pretrain: bool) -> tuple[list[dict], str, int]:
    from swift.core import build_template, encode_rows, max_length
    from swift.core.dataset import pack_dataset

    template = build_template(args.template, tokenizer, pretrain=pretrain)
    length = max_length(args.template)
    encoded = encode_rows(rows_raw, template, args.data, args.template)
    if args.template.packing:
        encoded = pack_dataset(encoded, length, num_proc=args.data.dataset_num_proc)
    keep = ("input_ids", "labels", "position_ids")
    rows = [{k: row[k] for k in keep if k in row} for row in encoded]
    if not rows:
        raise ConfigError(f"--max_length {length}: every training row is longer; raise it or use "
                          "--truncation_strategy left/right")
    return rows, template.name, length


def _train(args, parallel: Parallel, source: Source, shape, rows, *, dtype, template_name: str, max_length: int,
           command: str) -> MegatronResult:
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from swift.core.run import ARGS_FILE, new_run_dir, on_rank0, plot_losses, write_json_atomic
    from swift.megatron.data import BatchPlan, step_microbatches
    from swift.megatron.model import build_gpt, transformer_config
    from swift.tuners import get_tuner

    m, tuner = args.megatron, args.tuner
    rank, dp, dp_rank = dist.get_rank(), ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    if m.global_batch_size % (m.micro_batch_size * dp):
        raise ConfigError(f"--global_batch_size {m.global_batch_size} must be a multiple of --micro_batch_size "
                          f"{m.micro_batch_size} x {dp} data-parallel ranks")
    train_iters = m.train_iters or max(1, math.ceil(len(rows) / m.global_batch_size))
    lr = m.lr or get_tuner(tuner.train_type).default_learning_rate
    run_dir = on_rank0(lambda: new_run_dir(m.save, source.model_id, add_version=m.add_version))
    flat = to_flat_dict(args) | {"model": source.model_id, "run_dir": str(run_dir), "template_name": template_name,
                                 "command": f"megatron {command}", "max_length": max_length, "lr": lr,
                                 "train_iters": train_iters, "world_size": dist.get_world_size(),
                                 "data_parallel_size": dp}
    if rank == 0:
        write_json_atomic(run_dir / ARGS_FILE, flat)

    config = transformer_config(source.hf_config, shape, parallel, dtype=dtype,
                                recompute_granularity=m.recompute_granularity)
    gpt = build_gpt(source.hf_config, shape, config, tp=parallel.tp)
    lora_spec = _load_weights(gpt, source, shape, parallel, tuner, seed=m.seed, dtype=dtype)
    gpt.to(dtype)
    if torch.cuda.is_available():
        gpt.cuda(torch.cuda.current_device())
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                               use_distributed_optimizer=m.use_distributed_optimizer,
                                               check_for_nan_in_grad=False, bucket_size=None)
    model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=gpt)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=lr, min_lr=m.min_lr, weight_decay=m.weight_decay, adam_beta1=m.adam_beta1,
        adam_beta2=m.adam_beta2, clip_grad=m.clip_grad, bf16=dtype == torch.bfloat16, params_dtype=dtype,
        use_distributed_optimizer=m.use_distributed_optimizer), [model])
    config.no_sync_func, config.finalize_model_grads_func = model.no_sync, finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0 if m.lr_warmup_iters else lr, max_lr=lr, min_lr=m.min_lr,
        lr_warmup_steps=m.lr_warmup_iters, lr_decay_steps=max(train_iters, m.lr_warmup_iters + 1),
        lr_decay_style=m.lr_decay_style, start_wd=m.weight_decay, end_wd=m.weight_decay,
        wd_incr_steps=train_iters, wd_incr_style="constant")
    start = _resume(source, m, optimizer, scheduler, parallel) if source.checkpoint is not None else 0

    plan = BatchPlan(m.global_batch_size, m.micro_batch_size, dp, dp_rank, seed=args.data.data_seed,
                     pad_multiple=parallel.tp if config.sequence_parallel else 1)
    forward_backward = get_forward_backward_func()
    log_path, losses, last = run_dir / "logging.jsonl", {}, None
    saver = partial(_save, run_dir, model=gpt, optimizer=optimizer, scheduler=scheduler, parallel=parallel,
                    source=source, meta={"train_type": tuner.train_type, "model": source.model_id,
                                         "lora": lora_spec.to_dict() if lora_spec else None, "family": shape.family,
                                         "use_distributed_optimizer": m.use_distributed_optimizer})
    logger.info("run directory %s; %d rows; %d steps of %d rows; tp=%d pp=%d ep=%d dp=%d; %s", run_dir, len(rows),
                train_iters, m.global_batch_size, parallel.tp, parallel.pp, parallel.ep, dp, dtype)
    clock, tokens_seen, window_tokens = time.perf_counter(), 0, 0
    for step in range(start, train_iters):
        micro, seq_length = step_microbatches(rows, step, plan)
        model.zero_grad_buffer()
        optimizer.zero_grad()
        out = forward_backward(forward_step_func=_forward_step, data_iterator=iter(micro), model=[model],
                               num_microbatches=len(micro), seq_length=seq_length,
                               micro_batch_size=m.micro_batch_size, forward_only=False)
        step_lr = optimizer.param_groups[0]["lr"]  # the rate this step used (the scheduler moves it next)
        _, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        loss = _reduce_loss(out)
        iteration = step + 1
        batch_tokens = _global_tokens(rows, step, plan)
        tokens_seen, window_tokens = tokens_seen + batch_tokens, window_tokens + batch_tokens
        losses[iteration] = loss
        if iteration == 1 or iteration % m.log_interval == 0 or iteration == train_iters:
            now = time.perf_counter()
            row = {"step": iteration, "loss": round(loss, 8), "lr": step_lr,
                   "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),
                   "tokens_per_second": round(window_tokens / max(now - clock, 1e-9), 2), "tokens_seen": tokens_seen}
            clock, window_tokens = now, 0
            if rank == 0:
                _append_log(log_path, row)
                logger.info("step %d/%d loss %.6f lr %.3g grad_norm %s", iteration, train_iters, loss, row["lr"],
                            row["grad_norm"])
        if iteration % m.save_interval == 0 or iteration == train_iters:
            last = saver(iteration)
            if rank == 0:
                plot_losses(run_dir)
    logger.info("last checkpoint: %s", last)
    return MegatronResult(run_dir, last, losses)


def _load_weights(gpt, source: Source, shape, parallel: Parallel, tuner, *, seed: int, dtype) -> Any:
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
        merge_meta = {"tp": meta["tp"], "pp": meta["pp"], "ep": meta.get("ep", 1)}
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
    full = pad_vocab(full, padded_vocab_size(shape.vocab_size, parallel.tp)) | lora_full
    load_local(gpt, shard(full, shape, tp=parallel.tp, pp=parallel.pp, ep=parallel.ep, **rank_position()))
    return spec


def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], labels=batch["labels"], runtime_gather_output=False)
    return output, partial(_loss, batch["loss_mask"])


def _loss(loss_mask, per_token):
    """Sum over label tokens; mcore divides by the global batch's label-token count (calculate_per_token_loss),
    which is what `swift sft` (transformers' num_items_in_batch) does too."""
    import torch

    loss_mask = loss_mask.to(per_token.device)
    total = (per_token.float() * loss_mask).sum()
    count = loss_mask.sum().to(torch.int)
    return total, count, {"lm loss": torch.stack([total.detach(), count.detach().float()])}


def _reduce_loss(out: list[dict]) -> float:
    """The step's per-token loss on every rank: summed over micro-batches and data-parallel ranks on the last stage,
    then shared along the pipeline."""
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps

    totals = torch.zeros(2, dtype=torch.float64)
    if ps.is_pipeline_last_stage():
        for item in out:
            totals += item["lm loss"].detach().cpu().double()
        dist.all_reduce(totals, group=ps.get_data_parallel_group(with_context_parallel=True))
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.all_reduce(totals, group=ps.get_pipeline_model_parallel_group())
    return float(totals[0] / max(totals[1], 1.0))


def _global_tokens(rows, step: int, plan) -> int:
    from swift.megatron.data import global_batch_indices

    return sum(len(rows[i]["input_ids"]) for i in global_batch_indices(len(rows), step, plan))


def _append_log(path: Path, row: dict) -> None:
    import json
    import resource

    # swift.train.callbacks has the same one-liner, but importing it pulls transformers' Trainer stack (~20 s CPU)
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", None) or [optimizer])


def _save(run_dir: Path, iteration: int, *, model, optimizer, scheduler, parallel: Parallel, source: Source,
          meta: dict) -> Path:
    import shutil

    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.lora import lora_state
    from swift.megatron.model import rank_position

    rank = dist.get_rank()
    stage = ckpt.staging_dir(run_dir, iteration)
    if rank == 0:
        shutil.rmtree(stage, ignore_errors=True)
        ckpt.write_hf_files(stage / "hf", source.hf_config, source.tokenizer)
    dist.barrier()
    pos = rank_position()
    writer = (ps.get_expert_data_parallel_rank() if parallel.ep > 1 else ps.get_data_parallel_rank()) == 0
    if writer:
        folder = stage / ckpt.rank_dir_name(pos["tp_rank"], pos["pp_rank"], pos["ep_rank"], pp=parallel.pp,
                                            ep=parallel.ep)
        folder.mkdir(parents=True, exist_ok=True)
        state = lora_state(model) if meta["lora"] else {
            k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
        torch.save({"model": {k: v.detach().cpu() for k, v in state.items()}, "iteration": iteration,
                    "opt_param_scheduler": scheduler.state_dict()}, folder / ckpt.MODEL_FILE)
    ranks = stage / "rank_state"
    ranks.mkdir(parents=True, exist_ok=True)
    subs = _optimizers(optimizer)
    torch.save({"optimizer": [sub.optimizer.state_dict() for sub in subs],
                "main_params": [[p.detach().cpu().clone() for g in sub.optimizer.param_groups for p in g["params"]]
                                for sub in subs],
                "rng": _rng_state(), "world_size": dist.get_world_size()}, ranks / f"rank_{rank:05d}.pt")
    dist.barrier()
    final = run_dir / ckpt.iter_name(iteration)
    if rank == 0:
        ckpt.write_meta(stage, meta | {"iteration": iteration, "tp": parallel.tp, "pp": parallel.pp,
                                       "ep": parallel.ep, "world_size": dist.get_world_size(), "has_optimizer": True})
        final = ckpt.publish(run_dir, iteration)
        logger.info("saved %s", final)
    dist.barrier()
    return final


def _rng_state() -> dict:
    import random

    import numpy as np
    import torch

    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    return {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "tracker": get_cuda_rng_tracker().get_states()}


def _resume(source: Source, m, optimizer, scheduler, parallel: Parallel) -> int:
    """Restore iteration, scheduler, optimizer and RNG from --load (weights are loaded already); 0 with --finetune
    or a weights-only checkpoint."""
    import random

    import numpy as np
    import torch
    import torch.distributed as dist

    from megatron.core.tensor_parallel import get_cuda_rng_tracker
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.model import rank_position

    meta = source.meta or {}
    if m.finetune or not meta.get("has_optimizer"):
        return 0
    same = (meta["tp"], meta["pp"], meta.get("ep", 1), meta.get("world_size")) == (
        parallel.tp, parallel.pp, parallel.ep, dist.get_world_size())
    if not same:
        raise ConfigError(f"--load {source.checkpoint}: saved with tp={meta['tp']} pp={meta['pp']} "
                          f"ep={meta.get('ep', 1)} on {meta.get('world_size')} processes; resume with the same "
                          "layout, or pass --finetune true to start a new run from its weights")
    pos = rank_position()
    folder = source.checkpoint / ckpt.rank_dir_name(pos["tp_rank"], pos["pp_rank"], pos["ep_rank"], pp=parallel.pp,
                                                    ep=parallel.ep)
    saved = torch.load(folder / ckpt.MODEL_FILE, map_location="cpu", weights_only=False)
    scheduler.load_state_dict(saved["opt_param_scheduler"])
    state = torch.load(source.checkpoint / "rank_state" / f"rank_{dist.get_rank():05d}.pt", map_location="cpu",
                       weights_only=False)
    if not m.no_load_optim:
        for sub, inner, mains in zip(_optimizers(optimizer), state["optimizer"], state["main_params"], strict=True):
            sub.optimizer.load_state_dict(inner)
            params = [p for g in sub.optimizer.param_groups for p in g["params"]]
            with torch.no_grad():
                for param, value in zip(params, mains, strict=True):
                    param.copy_(value)
            if hasattr(sub, "_copy_main_params_to_model_params"):
                sub._copy_main_params_to_model_params()
    if not m.no_load_rng:
        rng = state["rng"]
        random.setstate(rng["random"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        get_cuda_rng_tracker().set_states(rng["tracker"])
    logger.info("resumed from %s at iteration %d", source.checkpoint, saved["iteration"])
    return int(saved["iteration"])
