"""What a multi-process run really does, checked at run time.

Several wrong set-ups train without complaint in a mode the user did not ask for (measured with transformers 5.24,
accelerate 1.15): `fsdp` with `use_cpu=True` runs plain DDP; torchrun without `use_cpu` on a CPU box wraps nothing and
each rank trains alone. So once the Trainer has wrapped the model, `StrategyCheck` compares the wrapper it finds with
the strategy the flags ask for, writes both into `<run>/env.json` and stops the run when they differ.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from swift.core import SwiftError, env
from swift.core.run import write_json_atomic

logger = logging.getLogger(__name__)

ENV_FILE = "env.json"


class StrategyFallbackError(SwiftError, RuntimeError):
    """The run would train with another strategy (or world size) than the one asked for."""


def requested_strategy(deepspeed: str | None, fsdp: str | None, world_size: int) -> str:
    """The strategy the flags ask for: `deepspeed_zero<N>`, `fsdp<1|2>`, `ddp` (several processes) or `single`."""
    from swift.train.strategy import deepspeed_config, fsdp_preset

    if deepspeed:
        return f"deepspeed_zero{int(deepspeed_config(deepspeed).get('zero_optimization', {}).get('stage', 0))}"
    if fsdp:
        config = fsdp_preset(fsdp).get("fsdp_config", {})
        return f"fsdp{int(config.get('fsdp_version', config.get('version', 2)))}"
    return "ddp" if world_size > 1 else "single"


def strategy_in_use(model: Any) -> str:
    """The strategy of the outermost model the Trainer trains (its `model_wrapped`)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    if type(model).__name__ == "DeepSpeedEngine":
        return f"deepspeed_zero{int(model.zero_optimization_stage())}"
    if isinstance(model, FSDPModule):  # fully_shard (FSDP2) changes the module's class in place
        return "fsdp2"
    if isinstance(model, FullyShardedDataParallel):
        return "fsdp1"
    if isinstance(model, DistributedDataParallel):
        return "ddp"
    return "single"


def describe(trainer: Any, requested: str) -> dict[str, Any]:
    """The facts env.json records: world, ranks per node, backend, strategy and wrapper class found at run time."""
    import torch
    import torch.distributed as dist

    model = trainer.model_wrapped
    wrapper = type(model)
    initialized = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialized else 1
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))  # set by torchrun, Ray Train and our srun path
    info = {
        "world_size": world,
        "ranks_per_node": per_node,
        "nnodes": max(1, world // max(1, per_node)),
        "backend": backend_of(trainer.args.device) if initialized else None,
        "strategy": strategy_in_use(model),
        "requested_strategy": requested,
        "model_wrapper": f"{wrapper.__module__}.{wrapper.__qualname__}",
        "device": str(trainer.args.device),
        "mixed_precision": mixed_precision(trainer),
        "launcher": launcher(),
        "versions": versions(),
    }
    if hasattr(model, "find_unused_parameters"):  # DDP: what --ddp_find_unused_parameters (or its default) set
        info["ddp_find_unused_parameters"] = bool(model.find_unused_parameters)
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def backend_of(device: Any) -> str:
    """The process group's backend for the training device (`get_backend` says "undefined" for a group made with
    one backend per device type, as accelerate makes them)."""
    import torch.distributed as dist

    name = dist.get_backend()
    if name != "undefined":
        return name
    pairs = dict(pair.split(":", 1) for pair in dist.get_backend_config().split(",") if ":" in pair)
    return pairs.get(getattr(device, "type", str(device).split(":")[0]), dist.get_backend_config())


def mixed_precision(trainer: Any) -> str:
    model, args = trainer.model_wrapped, trainer.args
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    policy = getattr(plugin, "mixed_precision_policy", None)
    if policy is not None and getattr(policy, "param_dtype", None) is not None:
        return f"{str(policy.param_dtype).removeprefix('torch.')} params (FSDP mixed precision)"
    if type(model).__name__ == "DeepSpeedEngine":
        if model.torch_autocast_enabled():
            return f"{str(model.torch_autocast_dtype()).removeprefix('torch.')} autocast (fp32 weights)"
        return "bf16 weights" if model.bfloat16_enabled() else "fp16 weights" if model.fp16_enabled() else "no"
    return "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "no"


def launcher() -> str:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a Ray Train worker (ray_launch.py)
        return "ray"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun"
    if os.environ.get("SLURM_PROCID") is not None and env.world_size() > 1:
        return "srun"
    return "none" if env.world_size() <= 1 else "env"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    names = ("torch", "transformers", "accelerate", "peft", "deepspeed", "ray")
    return {name: v for name in names if (v := installed(name)) is not None}


class StrategyCheck(TrainerCallback):
    """At the start of training: write `<run>/env.json` (rank 0) and stop, on every rank, when the strategy in use
    is not the one asked for or the process group is not the one the launcher announced."""

    def __init__(self, trainer: Any, run_dir: Path, requested: str) -> None:
        self.trainer, self.run_dir, self.requested = trainer, run_dir, requested

    def on_train_begin(self, args, state, control, **kwargs):
        info = describe(self.trainer, self.requested)
        if state.is_world_process_zero:
            write_json_atomic(self.run_dir / ENV_FILE, info)
        check(info, self.requested, env.world_size())
        logger.info("strategy %s on %d process(es) (%s, %s)", info["strategy"], info["world_size"],
                    info["backend"], info["model_wrapper"])


def check(info: dict[str, Any], requested: str, launched_world: int) -> None:
    """Raise `StrategyFallbackError` when the run found is not the run asked for."""
    if info["world_size"] != launched_world:
        raise StrategyFallbackError(
            f"the launcher started {launched_world} processes (WORLD_SIZE) but the process group has "
            f"{info['world_size']}: each rank would train alone. Launch with `NPROC_PER_NODE=N swift sft ...` or "
            "torchrun, and let swift pick the device (no --use_cpu / CUDA_VISIBLE_DEVICES mismatch)")
    if info["strategy"] != requested:
        raise StrategyFallbackError(
            f"asked for {requested} but the Trainer wrapped the model as {info['strategy']} "
            f"({info['model_wrapper']}); stopping instead of training in a mode you did not ask for. "
            f"See {ENV_FILE} in the run directory")


def destroy_process_group() -> None:
    """Leave the process group cleanly at the end of a run (about 1 run in 70 otherwise aborted at exit with
    "terminate called without an active exception" after training had finished)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
