"""Multi-process launch: `NPROC_PER_NODE=2 swift sft ...` starts torchrun itself, as ms-swift users expect.

Under a user's own `torchrun` (or anything that sets LOCAL_RANK) the command runs as one worker instead. Under Slurm's
`srun` with several tasks (one per GPU), each task becomes one worker with the ranks Slurm gave it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from swift.core import env
from swift.core.errors import ConfigError

logger = logging.getLogger(__name__)


def relaunch_under_torchrun(command: str, argv: Sequence[str], *, module: str) -> int | None:
    """Re-run `python -m <module> <command> argv` under torch.distributed.run when NPROC_PER_NODE asks for it, or
    as a worker of a multi-task `srun`, and return its exit code; else None (run here, as one process or as the
    worker a launcher started). `module` is the command's worker entry (swift.train.cli, swift.megatron.cli)."""
    world = env.launch_world()
    if world is None:
        slurm = slurm_worker_env()
        if slurm is None:
            return None
        logger.info("srun task %s of %s: running as that rank", slurm["RANK"], slurm["WORLD_SIZE"])
        return subprocess.call([sys.executable, "-m", module, command, *argv], env=os.environ | slurm)
    nproc = int(world["nproc_per_node"])
    if world["nnodes"] == "1":
        # One node: torchrun picks a free port itself, so concurrent runs on one machine never collide on 29500
        rendezvous = ["--standalone", f"--nproc_per_node={nproc}"]
    else:
        rendezvous = [f"--{key}={value}" for key, value in world.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "-m", module, command, *argv]
    logger.info("launching %s processes per node: %s", nproc, " ".join(cmd))
    return subprocess.call(cmd, env=os.environ | threads_per_process(nproc))


def threads_per_process(nproc: int) -> dict[str, str]:
    """OMP_NUM_THREADS for each of `nproc` processes sharing this machine's cores (unless the user set it):
    processes that each think they own every core run several times slower."""
    if os.environ.get("OMP_NUM_THREADS"):
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, nproc)))}


def slurm_worker_env() -> dict[str, str] | None:
    """torch.distributed's variables for one task of a multi-task `srun` (None outside one, or when a launcher
    already set them). MASTER_ADDR defaults to the first host of the step, MASTER_PORT to 29500."""
    slurm = os.environ
    if slurm.get("SLURM_PROCID") is None or slurm.get("RANK") is not None or slurm.get("LOCAL_RANK") is not None:
        return None
    ntasks = int(slurm.get("SLURM_NTASKS") or slurm.get("SLURM_NPROCS") or 1)
    if ntasks <= 1:
        return None  # one task per node: that task runs torchrun (NPROC_PER_NODE) or trains alone
    per_node = _first_count(slurm.get("SLURM_STEP_TASKS_PER_NODE") or slurm.get("SLURM_TASKS_PER_NODE") or "1")
    master = slurm.get("MASTER_ADDR") or _first_host(slurm.get("SLURM_STEP_NODELIST")
                                                     or slurm.get("SLURM_JOB_NODELIST") or "")
    if not master:
        raise ConfigError("srun with several tasks: set MASTER_ADDR to the first node's address "
                          "(SLURM_JOB_NODELIST was not readable)")
    return {"RANK": slurm["SLURM_PROCID"], "WORLD_SIZE": str(ntasks), "LOCAL_RANK": slurm.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(per_node), "NODE_RANK": slurm.get("SLURM_NODEID", "0"),
            "MASTER_ADDR": master, "MASTER_PORT": slurm.get("MASTER_PORT", "29500"),
            **threads_per_process(per_node)}


def _first_count(tasks_per_node: str) -> int:
    """`8(x2),4` -> 8 (Slurm's tasks-per-node syntax)."""
    match = re.match(r"\d+", tasks_per_node)
    return int(match.group()) if match else 1


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: `scontrol show hostnames` where it exists, else `node[01-04],x` ->
    `node01`."""
    if not nodelist:
        return ""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if match is None:
        return ""
    prefix, ranges = match.groups()
    return prefix + re.split(r"[-,]", ranges)[0] if ranges else prefix
