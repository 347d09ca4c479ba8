"""Multi-process launch: `NPROC_PER_NODE=2 swift sft ...` starts torchrun itself, as ms-swift users expect.

Under a user's own `torchrun` (or anything that sets LOCAL_RANK) the command runs as one worker instead.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

from swift.core import env

logger = logging.getLogger(__name__)


def relaunch_under_torchrun(command: str, argv: Sequence[str], *, module: str = "swift.train.cli") -> int | None:
    """Re-run `<module> <command> argv` under torch.distributed.run when NPROC_PER_NODE asks for it; else None.
    `module` is the worker entry (`python -m module command ...`); swift-megatron passes its own."""
    world = env.launch_world()
    if world is None:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", *(f"--{key}={value}" for key, value in world.items()),
           "-m", module, command, *argv]
    logger.info("launching %s processes per node: %s", world["nproc_per_node"], " ".join(cmd))
    return subprocess.call(cmd)


def shared_run_dir(make_dir):
    """Call `make_dir()` on rank 0 only and give every rank its result (one run directory per run, not per rank)."""
    if env.world_size() <= 1:
        return make_dir()
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # initialises the process group (gloo on CPU, nccl on GPU) that the Trainer will use
    box = [make_dir() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
