"""Which modules a tuner adapts: `all-linear`, a list of module names, or one regular expression."""

from __future__ import annotations

import re
from collections.abc import Sequence

_REGEX_CHARS = set(".*+?[](){}|^$\\")


def resolve_target_modules(values: Sequence[str]) -> str | list[str]:
    """What peft takes as `target_modules`: "all-linear", a regex string (full match), or a list of names."""
    values = list(values) or ["all-linear"]
    if values == ["all-linear"]:
        return "all-linear"
    if "all-linear" in values:
        return "all-linear"  # names beside all-linear add nothing peft would not already adapt
    if len(values) == 1 and _REGEX_CHARS & set(values[0]):
        re.compile(values[0])  # fail here, naming the flag, rather than deep inside peft
        return values[0]
    return values


def linear_module_names(model, *, exclude_output: bool = True) -> list[str]:
    """Short names of every Linear module of `model` (what `all-linear` covers), output head excluded."""
    import torch

    output = model.get_output_embeddings() if exclude_output and hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)
