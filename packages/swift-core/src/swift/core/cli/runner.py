"""What every command's entry point shares: take a parsed dataclass or flag strings, and say when work is missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from swift.core.arguments.parser import parse_args
from swift.core.errors import SwiftError

T = TypeVar("T")


class NotImplementedYetError(SwiftError, NotImplementedError):
    """A command whose arguments exist but whose work is not built yet."""


def resolve_args(cls: type[T], args: T | Sequence[str] | None, *, prog: str) -> T:
    """`args` as an instance of `cls`: returned as is, or parsed from flag strings (None: sys.argv)."""
    if isinstance(args, cls):
        return args
    return parse_args(cls, None if args is None else list(args), prog=prog)  # type: ignore[arg-type]


def not_built(command: str, issue: str) -> NotImplementedYetError:
    return NotImplementedYetError(f"`{command}` parses its flags but does not run yet in this release ({issue})")
