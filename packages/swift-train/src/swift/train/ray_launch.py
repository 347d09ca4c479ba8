"""`--use_ray true`: Ray Train's `TorchTrainer` runs the same training function on `--ray_num_workers` workers.

Ray starts the workers (on a cluster at `--ray_address`, or on a local Ray started here), gives each one its rank
(RANK, LOCAL_RANK, WORLD_SIZE... set by Ray Train) and the torch process group (gloo on CPU, nccl on GPU); each worker
then runs the command exactly as a torchrun worker would, so losses, env.json and checkpoints are the same.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swift.core import ConfigError, SwiftError, env, require_backend

logger = logging.getLogger(__name__)


def run_with_ray(command: Callable[[Any], Any], parsed: Any) -> int:
    """Run a command's entry (`sft_main`...) with the parsed arguments on Ray Train workers; 0 when every worker
    finished. Each worker calls `command(parsed)` (Ray pickles the function by reference)."""
    ray = require_backend("ray", extra="swift-train[ray]")
    require_backend("ray.train", extra="swift-train[ray]")
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    train = parsed.train
    if env.launch_world() is not None or env.world_size() > 1:
        raise ConfigError("--use_ray starts its own workers: unset NPROC_PER_NODE / do not run it under torchrun")
    use_gpu = torch.cuda.is_available()
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, train.ray_address)
    try:
        workers = train.ray_num_workers or int(ray.cluster_resources().get("GPU", 0))
        if workers < 1:
            raise ConfigError("--use_ray: no GPU in the Ray cluster; set --ray_num_workers N to train on N CPU workers")
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        worker_args = copy.deepcopy(parsed)
        worker_args.train.use_ray = False  # the workers train; they must not start Ray again
        scaling = ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                resources_per_worker=None if use_gpu else {"CPU": cpus})
        with tempfile.TemporaryDirectory(prefix="swift-ray-") as storage:  # Ray's own run records; we keep none
            trainer = TorchTrainer(
                _train_worker, train_loop_config={"command": command, "args": worker_args},
                scaling_config=scaling, torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                run_config=RunConfig(name=f"swift-{command.__name__}", storage_path=storage))
            logger.info("Ray Train: %d worker(s), %s, %d CPU(s) each", workers, "GPU" if use_gpu else "CPU", cpus)
            try:
                result = trainer.fit()
            except ray.train.TrainingFailedError as e:  # Ray Train v2 raises; its message names the failed worker
                raise SwiftError(f"a Ray Train worker failed: {e}") from e
        if getattr(result, "error", None) is not None:  # Ray Train v1 returns the error instead
            raise SwiftError(f"a Ray Train worker failed: {result.error}")
        if result.metrics and result.metrics.get("run_dir"):
            logger.info("run directory %s", result.metrics["run_dir"])
        return 0
    finally:
        if started_here:
            ray.shutdown()


def _init_ray(ray: Any, address: str | None) -> None:
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # A local Ray for this run only, bound to the loopback address; no dashboard. Ray enables token authentication
    # for a new local cluster and keeps the token in ~/.ray/auth_token (RAY_AUTH_MODE=disabled opts out).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the command's own function, as under torchrun."""
    import ray.train

    result = config["command"](config["args"])
    run_dir = getattr(result, "run_dir", None)
    ray.train.report({"run_dir": str(run_dir) if isinstance(run_dir, Path) else run_dir})
