"""mcore checkpoints in Megatron-LM's layout, written atomically:

    <dir>/latest_checkpointed_iteration.txt
    <dir>/iter_0000003/
        swift_mcore.json             layout (tp, pp, ep), model shape source, train type, LoRA spec, iteration
        hf/                          the HF config and tokenizer (what `--to_hf` and `--load` rebuild from)
        mp_rank_00/model_optim_rng.pt        (PP = 1; mp_rank_TT_PPP with PP > 1; _EEE appended with EP > 1)
        optimizer/rank_00000.pt      each rank's optimizer state (exact resume at the same layout)

`model_optim_rng.pt` holds the rank's mcore state dict (LoRA tensors only for LoRA runs), the scheduler, the
iteration and the RNG states. Every rank writes into a staging folder; rank 0 renames it into place after a
barrier, so a kill mid-save never leaves an `iter_*` that a resume would trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from swift.core import ConfigError
from swift.core.run import write_json_atomic

META = "swift_mcore.json"
LATEST = "latest_checkpointed_iteration.txt"
MODEL_FILE = "model_optim_rng.pt"


def iter_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def rank_dir_name(tp_rank: int, pp_rank: int, ep_rank: int, *, pp: int, ep: int) -> str:
    name = f"mp_rank_{tp_rank:02d}"
    if pp > 1:
        name += f"_{pp_rank:03d}"
    if ep > 1:
        name += f"_{ep_rank:03d}"
    return name


def find_checkpoint(path: str | Path, flag: str = "--load") -> Path:
    """An `iter_*` folder from itself, a folder with latest_checkpointed_iteration.txt, or a run folder
    holding `iter_*` (the newest)."""
    path = Path(path).expanduser()
    if (path / META).is_file():
        return path
    if (path / LATEST).is_file():
        found = path / iter_name(int((path / LATEST).read_text().strip()))
        if (found / META).is_file():
            return found
    candidates = sorted((p for p in path.glob("**/iter_*") if (p / META).is_file()),
                        key=lambda p: (int(re.sub(r"\D", "", p.name) or 0), str(p)))
    if candidates:
        return candidates[-1]
    raise ConfigError(f"{flag} {path}: no mcore checkpoint there (expected iter_*/{META}, or {LATEST})")


def read_meta(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / META).read_text())


def read_pieces(checkpoint: Path) -> dict[tuple[int, int, int], dict]:
    """{(tp_rank, pp_rank, ep_rank): model state dict} of every rank folder of a checkpoint."""
    import torch

    meta = read_meta(checkpoint)
    pieces = {}
    for tp_rank in range(meta["tp"]):
        for pp_rank in range(meta["pp"]):
            for ep_rank in range(meta.get("ep", 1)):
                name = rank_dir_name(tp_rank, pp_rank, ep_rank, pp=meta["pp"], ep=meta.get("ep", 1))
                file = checkpoint / name / MODEL_FILE
                if not file.is_file():
                    raise ConfigError(f"checkpoint {checkpoint} is incomplete: {name}/{MODEL_FILE} is missing")
                pieces[(tp_rank, pp_rank, ep_rank)] = torch.load(file, map_location="cpu", weights_only=False)["model"]
    return pieces


def write_hf_files(target: Path, hf_config: Any, tokenizer: Any) -> None:
    """The HF config (as a plain dense model's: a GGUF-loaded model such as the packaged SmolLM2 carries a
    quantization config that does not describe the weights we write) and the tokenizer."""
    import copy

    target.mkdir(parents=True, exist_ok=True)
    hf_config = copy.deepcopy(hf_config)
    if hasattr(hf_config, "quantization_config"):
        del hf_config.quantization_config
    hf_config.save_pretrained(target)
    if tokenizer is not None:
        tokenizer.save_pretrained(target)


def staging_dir(root: Path, iteration: int) -> Path:
    return root / f".{iter_name(iteration)}.staging"


def publish(root: Path, iteration: int) -> Path:
    """Rename the staged checkpoint into place and point latest_checkpointed_iteration.txt at it (rank 0)."""
    final = root / iter_name(iteration)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging_dir(root, iteration), final)
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(str(iteration))
    os.replace(tmp, root / LATEST)
    return final


def write_meta(target: Path, meta: dict[str, Any]) -> None:
    write_json_atomic(target / META, meta)
