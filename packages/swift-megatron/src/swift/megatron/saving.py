"""Checkpoints of a training run: save (with or without optimizer and RNG state, plus an HF copy with
`--save_safetensors`), keep the newest `--save_total_limit`, and resume from `--load`."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core import ConfigError
from swift.core.arguments import ModelArgs
from swift.megatron.convert import Stages
from swift.megatron.model import Parallel

logger = logging.getLogger(__name__)

HF_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class SavePolicy:
    """What each checkpoint holds (`--no_save_optim`, `--no_save_rng`, `--save_safetensors`, `--merge_lora`) and
    how many are kept (`--save_total_limit`)."""

    save_optim: bool = True
    save_rng: bool = True
    save_safetensors: bool = False
    merge_lora: bool = True
    total_limit: int | None = None


@dataclass
class Saver:
    """Everything a checkpoint needs besides the iteration."""

    run_dir: Path
    model: Any
    optimizer: Any
    scheduler: Any
    parallel: Parallel
    hf_config: Any
    tokenizer: Any
    meta: dict
    policy: SavePolicy
    model_args: ModelArgs

    def __call__(self, iteration: int) -> Path:
        final = save_checkpoint(self, iteration)
        import torch.distributed as dist

        if dist.get_rank() == 0:
            if self.policy.save_safetensors:
                from swift.megatron.export import convert_to_hf

                hf_dir = convert_to_hf(final, self.run_dir / f"{HF_PREFIX}{iteration}", self.model_args,
                                       merge_lora=self.policy.merge_lora, replace=True)
                logger.info("saved HF safetensors %s", hf_dir)
            if self.policy.total_limit is not None:
                prune_checkpoints(self.run_dir, self.policy.total_limit)
        dist.barrier()
        return final


def optimizers(optimizer: Any) -> list:
    return list(getattr(optimizer, "chained_optimizers", None) or [optimizer])


def save_checkpoint(saver: Saver, iteration: int) -> Path:
    """Every rank writes its piece into a staging folder; rank 0 publishes it after a barrier."""
    import torch
    import torch.distributed as dist

    from megatron.core import parallel_state as ps
    from swift.megatron import checkpoint as ckpt
    from swift.megatron.lora import lora_state
    from swift.megatron.model import rank_position

    rank, parallel, policy = dist.get_rank(), saver.parallel, saver.policy
    stage = ckpt.staging_dir(saver.run_dir, iteration)
    if rank == 0:
        shutil.rmtree(stage, ignore_errors=True)
        ckpt.write_hf_files(stage / "hf", saver.hf_config, saver.tokenizer)
    dist.barrier()
    pos = rank_position()
    writer = (ps.get_expert_data_parallel_rank() if parallel.ep > 1 else ps.get_data_parallel_rank()) == 0
    if writer:
        folder = stage / ckpt.rank_dir_name(pos["tp_rank"], pos["pp_rank"], pos["ep_rank"], pp=parallel.pp,
                                            ep=parallel.ep)
        folder.mkdir(parents=True, exist_ok=True)
        state = lora_state(saver.model) if saver.meta["lora"] else {
            k: v for k, v in saver.model.state_dict().items() if not k.endswith("_extra_state")}
        torch.save({"model": {k: v.detach().cpu() for k, v in state.items()}, "iteration": iteration,
                    "opt_param_scheduler": saver.scheduler.state_dict()}, folder / ckpt.MODEL_FILE)
    if policy.save_optim or policy.save_rng:
        subs = optimizers(saver.optimizer)
        rank_state: dict[str, Any] = {"world_size": dist.get_world_size()}
        if policy.save_optim:
            rank_state["optimizer"] = [sub.optimizer.state_dict() for sub in subs]
            rank_state["main_params"] = [[p.detach().cpu().clone() for g in sub.optimizer.param_groups
                                          for p in g["params"]] for sub in subs]
        if policy.save_rng:
            rank_state["rng"] = rng_state()
        (stage / "rank_state").mkdir(parents=True, exist_ok=True)
        torch.save(rank_state, stage / "rank_state" / f"rank_{rank:05d}.pt")
    dist.barrier()
    final = saver.run_dir / ckpt.iter_name(iteration)
    if rank == 0:
        ckpt.write_meta(stage, saver.meta | {
            "iteration": iteration, "tp": parallel.tp, "pp": parallel.pp, "ep": parallel.ep,
            **parallel.stages.to_meta(), "world_size": dist.get_world_size(),
            "has_optimizer": policy.save_optim, "has_rng": policy.save_rng})
        final = ckpt.publish(saver.run_dir, iteration)
        logger.info("saved %s", final)
    dist.barrier()
    return final


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` iter_* folders (and their checkpoint-* HF copies); returns the deleted."""
    from swift.megatron import checkpoint as ckpt

    def number(path: Path) -> int:
        return int(re.sub(r"\D", "", path.name) or 0)

    iters = sorted((p for p in run_dir.glob("iter_*") if p.is_dir()), key=number)
    removed = []
    for old in iters[:-keep]:
        for path in (old, run_dir / f"{HF_PREFIX}{number(old)}"):
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
    for hf_dir in run_dir.glob(f"{HF_PREFIX}*"):  # an HF copy whose mcore checkpoint went
        if not (run_dir / ckpt.iter_name(number(hf_dir))).exists() and hf_dir.is_dir():
            shutil.rmtree(hf_dir)
            removed.append(hf_dir)
    if removed:
        logger.info("--save_total_limit %d: removed %s", keep, ", ".join(p.name for p in removed))
    return removed


def rng_state() -> dict:
    import random

    import numpy as np
    import torch

    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    return {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "tracker": get_cuda_rng_tracker().get_states()}


def resume(checkpoint: Path, meta: dict, m: Any, optimizer: Any, scheduler: Any, parallel: Parallel) -> int:
    """Restore iteration and scheduler from --load (weights are loaded already), and the optimizer and RNG where
    the checkpoint holds them; 0 with --finetune or a weights-only export."""
    import torch
    import torch.distributed as dist

    from swift.megatron import checkpoint as ckpt

    if m.finetune:
        return 0
    # iteration and scheduler are the same on every rank: the first rank folder has them, whatever the layout
    folder = checkpoint / ckpt.rank_dir_name(0, 0, 0, pp=meta["pp"], ep=meta.get("ep", 1))
    saved = torch.load(folder / ckpt.MODEL_FILE, map_location="cpu", weights_only=False)
    if "opt_param_scheduler" not in saved:
        return 0  # `megatron export --to_mcore`: weights only
    want_optim = meta.get("has_optimizer", True) and not m.no_load_optim
    want_rng = meta.get("has_rng", meta.get("has_optimizer", True)) and not m.no_load_rng
    for what, saved_it, flag in (("optimizer state", meta.get("has_optimizer", True), "--no_save_optim"),
                                 ("RNG state", meta.get("has_rng", True), "--no_save_rng")):
        if not saved_it:
            logger.info("--load %s was saved with %s: the %s starts afresh", checkpoint, flag, what)
    if want_optim or want_rng:
        layout = (meta["tp"], meta["pp"], meta.get("ep", 1), Stages.from_meta(meta), meta.get("world_size"))
        if layout != (parallel.tp, parallel.pp, parallel.ep, parallel.stages, dist.get_world_size()):
            raise ConfigError(f"--load {checkpoint}: saved with tp={meta['tp']} pp={meta['pp']} "
                              f"ep={meta.get('ep', 1)} on {meta.get('world_size')} processes; resume with the same "
                              "layout, or pass --finetune true to start a new run from its weights")
        state = torch.load(checkpoint / "rank_state" / f"rank_{dist.get_rank():05d}.pt", map_location="cpu",
                           weights_only=False)
        if want_optim:
            _load_optimizer(optimizer, state)
        if want_rng:
            _load_rng(state["rng"])
    scheduler.load_state_dict(saved["opt_param_scheduler"])
    logger.info("resumed from %s at iteration %d", checkpoint, saved["iteration"])
    return int(saved["iteration"])


def _load_optimizer(optimizer: Any, state: dict) -> None:
    import torch

    for sub, inner, mains in zip(optimizers(optimizer), state["optimizer"], state["main_params"], strict=True):
        sub.optimizer.load_state_dict(inner)
        params = [p for g in sub.optimizer.param_groups for p in g["params"]]
        with torch.no_grad():
            for param, value in zip(params, mains, strict=True):
                param.copy_(value)
        if hasattr(sub, "_copy_main_params_to_model_params"):
            sub._copy_main_params_to_model_params()


def _load_rng(rng: dict) -> None:
    import random

    import numpy as np
    import torch

    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(rng["random"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    get_cuda_rng_tracker().set_states(rng["tracker"])
