"""The output layout of a run: output/<model-name>/v<N>-<YYYYmmdd-HHMMSS>/ with args.json beside the checkpoints."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

ARGS_FILE = "args.json"


def model_folder_name(model_id: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` -> `SmolLM2-135M-Instruct` (a local dir: its last part)."""
    return Path(model_id.rstrip("/")).name or "model"


def new_run_dir(output_dir: str | None, model_id: str, *, add_version: bool = True) -> Path:
    """Create the next `v<N>-<timestamp>` directory (N = 1 + the highest existing) and return it."""
    root = Path(output_dir) if output_dir else Path("output") / model_folder_name(model_id)
    if not add_version:
        root.mkdir(parents=True, exist_ok=True)
        return root
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"v(\d+)-", p.name))]
    version = max(taken, default=-1) + 1
    while True:  # two runs starting in the same second still get distinct directories
        run = root / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            version += 1


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
    """args.json of a run or checkpoint directory (a checkpoint falls back to its run's)."""
    directory = Path(directory)
    for candidate in (directory / ARGS_FILE, directory.parent / ARGS_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return {}
