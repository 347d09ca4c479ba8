"""What a request can fail with: the client's fault (400/404), or the engine's (500, the server keeps serving)."""

from __future__ import annotations

from swift.core import SwiftError


class RequestError(SwiftError, ValueError):
    """A request the engine cannot serve as asked (prompt too long, a conversation the template refuses...)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownAdapterError(SwiftError, LookupError):
    """A request for a LoRA adapter (or served model name) that is not loaded."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"model or adapter {name!r} is not served here; choose one of {known}")


class EngineError(SwiftError, RuntimeError):
    """The backend failed while generating; the request is lost, the engine goes on with the others."""
