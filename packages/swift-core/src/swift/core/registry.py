"""What every registry shares: a plain dict of frozen dataclass entries keyed by name, duplicates refused, lookups
that suggest the closest names, and the choices a flag offers (with the reason for entries not built yet).

    TUNERS: dict[str, TunerMeta] = {}
    def register_tuner(meta, *, replace=False): add_entry(TUNERS, meta.name, meta, kind="tuner", replace=replace)
    def get_tuner(name): return find_entry(TUNERS, name, flag="--train_type")
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from swift.core.errors import ConfigError, DuplicateNameError

T = TypeVar("T")


def add_entry(table: dict[str, T], name: str, entry: T, *, kind: str, replace: bool = False) -> None:
    if name in table and not replace:
        raise DuplicateNameError(f"{kind} {name!r} exists; pass replace=True to override it")
    table[name] = entry


def find_entry(table: Mapping[str, T], name: str, *, flag: str) -> T:
    if name not in table:
        hint = difflib.get_close_matches(name, list(table), n=3)
        raise ConfigError(f"{flag} {name!r} is unknown" + (f"; did you mean {hint}?" if hint else ""))
    return table[name]


def choices_of(table: Mapping[str, object]) -> dict[str, str | None]:
    """name -> None, or why the entry is not built yet (its `not_built`)."""
    return {name: getattr(entry, "not_built", None) for name, entry in table.items()}
