"""The output layout of a run: output/<model-name>/v<N>-<YYYYmmdd-HHMMSS>/ with args.json beside the checkpoints."""

from __future__ import annotations

import re
import time
from pathlib import Path

from swift.core.run_args import ARGS_FILE, read_args, write_json_atomic

__all__ = ["ARGS_FILE", "model_folder_name", "new_run_dir", "read_args", "write_json_atomic"]


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
