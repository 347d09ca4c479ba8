"""`--deepspeed` and `--fsdp`: shipped presets (presets/*.json, "auto" filled from our flags by transformers) or a
user's JSON file, turned into TrainingArguments fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swift.core.errors import ConfigError, MissingBackendError

PRESETS = Path(__file__).parent / "presets"
DEEPSPEED_PRESETS = ("zero0", "zero1", "zero2", "zero3", "zero2_offload", "zero3_offload")
FSDP_PRESETS = ("fsdp2", "fsdp1", "fsdp2_offload")


def _load(value: str, presets: tuple[str, ...], flag: str) -> dict[str, Any]:
    path = PRESETS / f"{value}.json" if value in presets else Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"--{flag} {value!r}: use one of {', '.join(presets)} or a JSON file path")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"--{flag} {path}: not valid JSON ({e})") from None


def strategy_kwargs(deepspeed: str | None, fsdp: str | None, model: Any) -> dict[str, Any]:
    """TrainingArguments keyword arguments for the chosen strategy ({} for plain DDP / one process)."""
    if deepspeed and fsdp:
        raise ConfigError("--deepspeed and --fsdp are two ways to shard training: choose one")
    if deepspeed:
        config = _load(deepspeed, DEEPSPEED_PRESETS, "deepspeed")
        try:
            import deepspeed as _  # noqa: F401
        except ImportError as e:
            raise MissingBackendError("deepspeed", extra="swift-train[deepspeed]") from e
        return {"deepspeed": config}
    if fsdp:
        preset = _load(fsdp, FSDP_PRESETS, "fsdp")
        config = dict(preset.get("fsdp_config", {}))
        layer_classes = list(getattr(model, "_no_split_modules", None) or [])
        if layer_classes and "transformer_layer_cls_to_wrap" not in config:
            config["transformer_layer_cls_to_wrap"] = layer_classes  # the model's decoder layer class
        return {"fsdp": preset.get("fsdp", "full_shard auto_wrap"), "fsdp_config": config}
    return {}
