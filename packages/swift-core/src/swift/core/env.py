"""Every environment variable Swift reads, in one typed place. Library code never writes os.environ."""

from __future__ import annotations

import os
from pathlib import Path


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def swift_cache() -> Path:
    """Root of Swift's own cache (converted models, ...): $SWIFT_CACHE, else $XDG_CACHE_HOME/swift, else ~/.cache/swift."""
    if os.environ.get("SWIFT_CACHE"):
        return Path(os.environ["SWIFT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "swift"


def use_modelscope_hub() -> bool:
    """USE_MODELSCOPE_HUB=1 makes ModelScope the hub for model ids (as in ms-swift)."""
    return _flag("USE_MODELSCOPE_HUB")


def hub_offline() -> bool:
    """True when the user told the HF stack not to touch the network."""
    return _flag("HF_HUB_OFFLINE") or _flag("TRANSFORMERS_OFFLINE")


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None
