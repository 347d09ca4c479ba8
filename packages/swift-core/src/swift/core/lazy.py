"""Lazy public names for package `__init__` modules: a name's module is imported on first use.

    __getattr__, __dir__ = lazy_exports(__name__, {"PtEngine": "swift.infer.engine.pt"})

A name mapped to the submodule of the same name (`"env": "swift.core.env"`) exports that module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module == f"{package}.{name}":  # a public submodule (`from swift.core import env`)
            return importlib.import_module(module)
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
