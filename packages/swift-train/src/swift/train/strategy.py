"""`--deepspeed` and `--fsdp`: shipped presets (presets/*.json, "auto" filled from our flags by transformers) or a
user's JSON file, turned into TrainingArguments fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swift.core import ConfigError, MissingBackendError

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


def deepspeed_config(value: str) -> dict[str, Any]:
    """The DeepSpeed JSON of `--deepspeed` (a preset name or a file)."""
    config = _load(value, DEEPSPEED_PRESETS, "deepspeed")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"--deepspeed {value}: zero_optimization.stage {stage!r} must be 0, 1, 2 or 3")
    return config


def fsdp_preset(value: str) -> dict[str, Any]:
    """The `{"fsdp": ..., "fsdp_config": {...}}` of `--fsdp` (a preset name or a file)."""
    preset = _load(value, FSDP_PRESETS, "fsdp")
    config = preset.get("fsdp_config", {})
    version = config.get("fsdp_version", config.get("version", 2))
    if version not in (1, 2):
        raise ConfigError(f"--fsdp {value}: fsdp_config.fsdp_version {version!r} must be 1 or 2")
    return preset


def strategy_kwargs(deepspeed: str | None, fsdp: str | None, model: Any, *, bf16: bool = False) -> dict[str, Any]:
    """TrainingArguments keyword arguments for the chosen strategy ({} for plain DDP / one process). `bf16`: the run
    trains under bf16 autocast (its TrainingArguments' bf16); a DeepSpeed run may override that field."""
    if deepspeed and fsdp:
        raise ConfigError("--deepspeed and --fsdp are two ways to shard training: choose one")
    if deepspeed:
        config = deepspeed_config(deepspeed)
        try:
            import deepspeed as _  # noqa: F401
        except ImportError as e:
            raise MissingBackendError("deepspeed", extra="swift-train[deepspeed]") from e
        if bf16 and _precision_is_auto(config):
            return {"deepspeed": with_torch_autocast(config), "bf16": False}
        return {"deepspeed": config}
    if fsdp:
        preset = fsdp_preset(fsdp)
        config = dict(preset.get("fsdp_config", {}))
        layer_classes = list(getattr(model, "_no_split_modules", None) or [])
        if layer_classes and "transformer_layer_cls_to_wrap" not in config:
            config["transformer_layer_cls_to_wrap"] = layer_classes  # the model's decoder layer class
        return {"fsdp": preset.get("fsdp", "full_shard auto_wrap"), "fsdp_config": config}
    return {}


def _precision_is_auto(config: dict[str, Any]) -> bool:
    """The config leaves precision to our flags: no torch_autocast section, fp16/bf16 absent or "auto"."""
    return "torch_autocast" not in config and all(
        str(config.get(key, {}).get("enabled", "auto")) == "auto" for key in ("bf16", "fp16"))


def with_torch_autocast(config: dict[str, Any]) -> dict[str, Any]:
    """`--bf16` under DeepSpeed as in one process: fp32 weights, gradients and reductions, bf16 autocast in the
    forward (DeepSpeed's `torch_autocast`). DeepSpeed's own `bf16` mode keeps bf16 weights and reduces bf16 gradients,
    which moves the losses away from one process's (tiny llama, 4 steps: ~1e-2 at loss 10; docs/benchmarks.md).
    Autocast stays on in TrainingArguments' place, so the Trainer gets bf16=False."""
    config = {k: v for k, v in config.items() if k not in ("bf16", "fp16")}
    config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    return config
