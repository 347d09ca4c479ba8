"""`--rope_scaling` / `--max_model_len` (ms-swift's flags): RoPE scaling and the context length, as attributes of a
model's (text) config set before its weights load.

- `--max_model_len N` alone sets `max_position_embeddings` to N.
- `--rope_scaling TYPE --max_model_len N` (linear, dynamic, yarn, llama3) scales the model's original positions
  to N: `factor = N / original_max_position_embeddings` (the config's own original length, else its
  `max_position_embeddings`); yarn and llama3 also record that original length.
- `--rope_scaling '{"rope_type": "yarn", "factor": 4.0, ...}'` replaces the config's scaling with exactly that
  (`type` is read as `rope_type`; the config's `rope_theta` and M-RoPE sections are kept).
"""

from __future__ import annotations

import json
from typing import Any

from swift.core.errors import ConfigError

SCALED_BY_LENGTH = ("linear", "dynamic", "yarn", "llama3")  # the types a factor alone describes
_KEPT = ("rope_theta", "mrope_section", "mrope_interleaved", "partial_rotary_factor")  # not part of the scaling


def text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def rope_overrides(config: Any, rope_scaling: str | None, max_model_len: int | None) -> dict[str, Any]:
    """The text-config attributes these flags set on `config` ({} for neither); a ConfigError names the flag."""
    if rope_scaling is None and max_model_len is None:
        return {}
    text = text_config(config)
    out: dict[str, Any] = {}
    if max_model_len is not None:
        if max_model_len < 1:
            raise ConfigError(f"--max_model_len {max_model_len}: must be at least 1")
        out["max_position_embeddings"] = max_model_len
    if rope_scaling is None:
        return out
    current = dict(getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {})
    kept = {key: value for key, value in current.items() if key in _KEPT}
    if rope_scaling.lstrip().startswith("{"):
        params = _from_json(rope_scaling)
    else:
        params = _from_length(rope_scaling, current, getattr(text, "max_position_embeddings", None), max_model_len)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if params["rope_type"] not in ROPE_INIT_FUNCTIONS:
        raise ConfigError(f"--rope_scaling: rope_type {params['rope_type']!r} is not one transformers has (choose from "
                          f"{', '.join(ROPE_INIT_FUNCTIONS)})")
    out["rope_parameters"] = kept | params
    return out


def check_rope_flags(rope_scaling: str | None, max_model_len: int | None) -> list[str]:
    """What can be said about the two flags before a config is read (the factor needs the model's positions)."""
    try:
        if max_model_len is not None and max_model_len < 1:
            raise ConfigError(f"--max_model_len {max_model_len}: must be at least 1")
        if rope_scaling is not None and rope_scaling.lstrip().startswith("{"):
            _from_json(rope_scaling)
        elif rope_scaling is not None:
            _check_by_name(rope_scaling, max_model_len)
    except ConfigError as e:
        return [str(e)]
    return []


def _from_json(text: str) -> dict[str, Any]:
    try:
        given = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--rope_scaling {text!r}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(given, dict):
        raise ConfigError(f"--rope_scaling {text!r}: a JSON object of rope parameters, or a type name")
    kind = given.pop("rope_type", None) or given.pop("type", None)
    if not kind:
        raise ConfigError(f"--rope_scaling {text!r}: the JSON needs its rope_type (or type), e.g. yarn")
    return given | {"rope_type": kind}


def _check_by_name(kind: str, max_model_len: int | None) -> None:
    if kind not in SCALED_BY_LENGTH:
        raise ConfigError(f"--rope_scaling {kind}: by name, one of {', '.join(SCALED_BY_LENGTH)} (with --max_model_len);"
                          " other types take their parameters as JSON")
    if max_model_len is None:
        raise ConfigError(f"--rope_scaling {kind}: give --max_model_len, the length to scale the positions to (or "
                          "the parameters as JSON, with their factor)")


def _from_length(kind: str, current: dict, positions: int | None, max_model_len: int) -> dict[str, Any]:
    _check_by_name(kind, max_model_len)
    original = current.get("original_max_position_embeddings") or positions
    if not original:
        raise ConfigError(f"--rope_scaling {kind}: the model's config has no max_position_embeddings to scale from")
    factor = max_model_len / original
    if factor <= 1:
        raise ConfigError(f"--max_model_len {max_model_len}: within the model's {original} positions, so --rope_scaling "
                          f"{kind} would scale nothing; drop --rope_scaling")
    params: dict[str, Any] = {"rope_type": kind, "factor": factor}
    if kind in ("yarn", "llama3"):
        params["original_max_position_embeddings"] = original
    if kind == "llama3":
        params |= {"low_freq_factor": current.get("low_freq_factor", 1.0),
                   "high_freq_factor": current.get("high_freq_factor", 4.0)}
    return params


def apply_rope_overrides(config: Any, overrides: dict[str, Any]) -> None:
    text = text_config(config)
    for key, value in overrides.items():
        setattr(text, key, value)
