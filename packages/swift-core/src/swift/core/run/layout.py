"""The output layout of a run: `output/<model-name>/v<N>-<YYYYmmdd-HHMMSS>/` with `args.json` (what the run resolved,
read back by infer / export / deploy) beside its checkpoints. Shared by `swift sft|pt|rlhf` and `megatron`."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from swift.core import env

logger = logging.getLogger(__name__)

ARGS_FILE = "args.json"
T = TypeVar("T")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file renamed into place, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_args(directory: str | Path) -> dict[str, Any]:
    """args.json of a run or checkpoint directory (a checkpoint falls back to its run's); {} when there is none."""
    directory = Path(directory)
    for candidate in (directory / ARGS_FILE, directory.parent / ARGS_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return {}


# Where a checkpoint keeps the adapter for its *original* base when training changed the base weights (LoRA-GA):
# ms-swift's layout, `checkpoint-N/converted/default`.
CONVERTED_ADAPTER = Path("converted") / "default"


def adapter_for_base(directory: str | Path) -> Path:
    """The adapter of checkpoint `directory` to put on the original base model: its `converted/default` when it has
    one (LoRA-GA trains on a residual base; swift.tuners.lora_ga), else the directory itself."""
    directory = Path(directory)
    converted = directory / CONVERTED_ADAPTER
    if (converted / "adapter_config.json").is_file():
        logger.info("%s: its adapter is relative to a changed base; using %s, the change to the original base",
                    directory, converted)
        return converted
    return directory


def model_folder_name(model_id: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` -> `SmolLM2-135M-Instruct` (a local dir: its last part)."""
    return Path(model_id.rstrip("/")).name or "model"


def new_run_dir(output_dir: str | None, model_id: str, *, add_version: bool = True) -> Path:
    """Create the next `v<N>-<timestamp>` directory (N = 1 + the highest existing) and return it."""
    root = Path(output_dir) if output_dir else Path("output") / model_folder_name(model_id)
    root.mkdir(parents=True, exist_ok=True)
    if not add_version:
        return root
    taken = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"v(\d+)-", p.name))]
    version = max(taken, default=-1) + 1
    while True:  # two runs starting in the same second still get distinct directories
        run = root / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            version += 1


def on_rank0(make: Callable[[], T]) -> T:
    """Call `make()` on rank 0 only and give every rank its result (one run directory per run, not per rank).

    With several processes the default process group is started here when nobody started it yet (accelerate's
    PartialState: gloo on CPU, nccl on GPU, the group transformers' Trainer then uses)."""
    if env.world_size() <= 1:
        return make()
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_rank0() -> bool:
    if env.world_size() <= 1:
        return True
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
