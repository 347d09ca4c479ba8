"""args.json: what a run resolved, written beside its checkpoints and read back by infer/export/deploy."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ARGS_FILE = "args.json"


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
