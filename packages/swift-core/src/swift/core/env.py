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


# Variables that flags fall back to (`arg(env=...)`), so a secret can stay off the command line (and out of `ps`).
FLAG_VARIABLES = {
    "HF_TOKEN": "--hub_token",
    "SWIFT_API_KEY": "--api_key (the key `swift deploy` requires; the key eval and app send)",
    "SWIFT_UI_AUTH": "--auth of swift web-ui / app (user:password)",
}


def read(name: str) -> str | None:
    """The value of one of FLAG_VARIABLES, or None when it is unset or empty."""
    if name not in FLAG_VARIABLES:
        raise KeyError(f"{name} is not a variable flags read (add it to FLAG_VARIABLES)")  # a bug of ours
    return os.environ.get(name) or None


def launch_world() -> dict[str, str] | None:
    """ms-swift's launch variables (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT) when the user set
    NPROC_PER_NODE and we are not already a worker (torchrun sets LOCAL_RANK); else None."""
    if not os.environ.get("NPROC_PER_NODE") or os.environ.get("LOCAL_RANK") is not None:
        return None
    return {
        "nproc_per_node": os.environ["NPROC_PER_NODE"],
        "nnodes": os.environ.get("NNODES", "1"),
        "node_rank": os.environ.get("NODE_RANK", "0"),
        "master_addr": os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "master_port": os.environ.get("MASTER_PORT", "29500"),
    }


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _cpu_flags() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose matmuls run bf16 natively (AMX or AVX512-BF16: oneDNN uses them), read from /proc/cpuinfo."""
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def vllm_cpu_dtype() -> str | None:
    """The weights dtype for vLLM on this CPU when none is asked for: float32 on AMX CPUs, whose bf16 path in
    vllm-cpu 0.32 decodes wrongly (measured on a Sapphire Rapids Xeon: SmolLM2 answers "The capital of France is
    Paris." in fp32 and "L'Etoile, la Marseillaise," in bf16); None elsewhere (the caller's own default)."""
    return "float32" if "amx_bf16" in _cpu_flags() else None
