"""Forms generated from the argument dataclasses the CLI parses, and the exact `swift ...` line a form runs.

One source of truth: each field is a `swift.core.arguments.Flag` of the command's dataclass, so its name, help,
type, choices and default are the CLI's. Values come back from the page as text / numbers / booleans and turn into
flags only where they differ from the CLI default, so the command box shows what the user changed.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swift.core.arguments import Flag, collect_flags


@dataclass(frozen=True)
class Field:
    flag: Flag
    elem_id: str  # the flag name, prefixed with the tab's key on tabs other than the first (ids are page-unique)


def form_fields(cls: type, *, prefix: str = "", skip: Sequence[str] = ()) -> list[Field]:
    """One field per flag of `cls` (its canonical name only), in the CLI's order."""
    seen, fields = set(), []
    for flag in collect_flags(cls).values():
        if flag.name in seen or flag.name in skip:
            continue
        seen.add(flag.name)
        fields.append(Field(flag, f"{prefix}{flag.name}"))
    return fields


def display_value(flag: Flag, value: Any) -> Any:
    """The CLI default as the component shows it."""
    if flag.is_bool:
        return ("" if value is None else ("true" if value else "false")) if flag.optional else bool(value)
    if flag.choices is not None and not flag.is_list:
        return "" if value is None else str(value)
    if flag.is_list:
        return " ".join(shlex.quote(str(v)) for v in value or [])
    if flag.kind is dict:
        return "" if value is None else json.dumps(value)
    if flag.kind in (int, float):
        return value
    return "" if value is None else str(value)


def flag_tokens(flag: Flag, value: Any) -> list[str]:
    """The words `--name value...` for a page value, or [] when it equals the CLI default (or is empty)."""
    if value is None or (isinstance(value, str) and not value.strip() and not flag.is_bool):
        return []
    if value == display_value(flag, flag.default):
        return []
    if flag.is_bool:
        return [f"--{flag.name}", value if isinstance(value, str) else ("true" if value else "false")]
    if flag.is_list:
        items = shlex.split(str(value))
        return [f"--{flag.name}", *items] if items else []
    if flag.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip() if isinstance(value, str) else str(value)
    return [f"--{flag.name}", text]


def command_argv(words: Sequence[str], fields: Sequence[Field], values: Sequence[Any]) -> list[str]:
    """The command line of the page's values; secrets are left out (they travel in `secret_env`)."""
    argv = ["swift", *words]
    for field, value in zip(fields, values, strict=True):
        if not field.flag.secret:
            argv += flag_tokens(field.flag, value)
    return argv


def secret_env(fields: Sequence[Field], values: Sequence[Any]) -> dict[str, str]:
    """The secrets typed on the page (--hub_token...) as the environment variables their flags read, so they reach
    the run without showing in `ps`, in command.json or in the command box."""
    return {field.flag.env: str(value).strip() for field, value in zip(fields, values, strict=True)
            if field.flag.secret and field.flag.env and isinstance(value, str) and value.strip()}


def command_line(argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """The line as a shell would take it; secrets show as `NAME=***` before it."""
    return " ".join([*(f"{name}=***" for name in secrets), shlex.join(argv)])
