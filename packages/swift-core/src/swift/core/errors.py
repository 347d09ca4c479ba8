"""Exception types shared by every Swift package.

`SwiftError` subclasses are user-facing: their message says what is wrong, where, and how to fix it, and the CLI
prints them without a traceback. Anything else escaping a command is a bug.
"""

from __future__ import annotations


class SwiftError(Exception):
    """Base class of every error Swift raises on purpose."""


class ConfigError(SwiftError, ValueError):
    """A flag, config file or argument value is invalid."""


class UnknownFlagError(ConfigError):
    """A command-line flag or config key that the command does not have."""


class DuplicateNameError(SwiftError, ValueError):
    """A registry entry with this name exists already."""


class UnknownModelError(SwiftError, LookupError):
    """A model id that is neither a local directory, a registered model nor reachable on a hub."""


class UnknownTemplateError(SwiftError, LookupError):
    """A template name that is not registered."""


class UnknownDatasetError(SwiftError, LookupError):
    """A dataset name that is neither a file, a registered dataset nor reachable on a hub."""


class MissingBackendError(SwiftError, ImportError):
    """An optional backend (vllm, deepspeed, gradio...) that is not installed."""

    def __init__(self, module: str, *, extra: str) -> None:
        self.module, self.extra = module, extra
        super().__init__(f"{module} is not installed; install it with: pip install \"{extra}\"")


class DatasetRowError(SwiftError, ValueError):
    """A dataset row that cannot be used, located by file, line (or row number) and field."""

    def __init__(self, path: str, line: int, field: str | None, reason: str) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"{path}:{line}" + (f" field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")


def require_backend(module: str, *, extra: str):
    """Import an optional backend by name, or raise `MissingBackendError` naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the backend is there but one of *its* imports failed: show that, not an install hint
        raise MissingBackendError(module, extra=extra) from e


class ModelLoadError(SwiftError, OSError):
    """A model directory that cannot be loaded as asked (a vision model without its processor files...)."""
