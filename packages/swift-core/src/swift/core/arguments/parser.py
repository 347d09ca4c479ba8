"""Command-line and `--config file.yaml` parsing into dataclasses grouped by concern.

A command's arguments are one dataclass whose fields are group dataclasses (`ModelArgs`, `DataArgs`, ...). Flags
are flat (`--lora_rank`, not `--tuner.lora_rank`), so a flag name is unique across the groups of a command.
Values come from, in rising priority: the dataclass defaults, the YAML file of `--config`, the command line.
Every problem is collected and reported at once, each naming the flag (and the config file) at fault.

This module must stay light: `swift <cmd> --help` imports it, and must not import torch or transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from swift.core import env
from swift.core.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null"}


Choices = Callable[[], Mapping[str, str | None]]


def arg(
    default: Any = None,
    help: str = "",
    *,
    aliases: Sequence[str] = (),
    deprecated: Sequence[str] = (),
    default_factory: Callable[[], Any] | None = None,
    choices: Choices | None = None,
    plugin: bool = False,
    secret: bool = False,
    env: str | None = None,
) -> Any:
    """A dataclass field that is also a flag.

    `aliases` are other names that are equally valid (ms-swift's `--tuner_type` for our `--train_type`);
    `deprecated` names still work but print a one-line warning naming the new flag.
    `choices` reads a registry when the flag is checked: name -> None, or name -> why it is not built yet (offered
    in --help, refused when chosen), so a flag never offers what does not exist and plugins add choices.
    `plugin` flags name python files that register entries: they run before any other flag is checked.
    `secret` values are never written to disk (args.json keeps None); `env` names the variable (read in
    `swift.core.env`) that gives the value when the flag is not set, so a secret can stay out of `ps`.
    """
    metadata = {"help": help, "aliases": tuple(aliases), "deprecated": tuple(deprecated), "choices": choices,
                "plugin": plugin, "secret": secret, "env": env}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a command: the group field it fills and how to convert its text."""

    name: str
    group: str  # attribute name of the group on the command's arguments dataclass
    group_title: str
    kind: Any  # the field's type with Optional removed
    optional: bool
    default: Any
    help: str
    aliases: tuple[str, ...]
    deprecated: tuple[str, ...]
    choice_source: Choices | None = None
    plugin: bool = False
    secret: bool = False
    env: str | None = None

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.kind) is list

    @property
    def is_bool(self) -> bool:
        return self.kind is bool

    @property
    def choices(self) -> tuple[Any, ...] | None:
        if self.choice_source is not None:
            return tuple(self.choice_source())
        kind = typing.get_args(self.kind)[0] if self.is_list else self.kind
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else None

    def not_built(self) -> dict[str, str]:
        """Choices that are offered but not built yet, with the reason."""
        if self.choice_source is None:
            return {}
        return {name: why for name, why in self.choice_source().items() if why}

    def type_name(self) -> str:
        if self.choices is not None:
            return "{" + ",".join(str(c) for c in self.choices) + "}" + (" ..." if self.is_list else "")
        kind = typing.get_args(self.kind)[0] if self.is_list else self.kind
        name = getattr(kind, "__name__", str(kind)).upper()
        return f"{name} [{name} ...]" if self.is_list else name


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return str, True  # a union of several types is taken as text and left to the group to interpret
    return hint, False


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def collect_flags(cls: type) -> dict[str, Flag]:
    """Flags of a command arguments dataclass, by every accepted name (canonical, aliases, deprecated)."""
    flags: dict[str, Flag] = {}
    for group_field in dataclasses.fields(cls):
        group_cls = typing.get_type_hints(cls)[group_field.name]
        title = (group_cls.__doc__ or group_field.name).strip().splitlines()[0]
        hints = typing.get_type_hints(group_cls)
        for f in dataclasses.fields(group_cls):
            if not f.init:
                continue
            kind, optional = _strip_optional(hints[f.name])
            flag = Flag(
                name=f.name, group=group_field.name, group_title=title, kind=kind, optional=optional,
                default=_default_of(f), help=f.metadata.get("help", ""),
                aliases=f.metadata.get("aliases", ()), deprecated=f.metadata.get("deprecated", ()),
                choice_source=f.metadata.get("choices"), plugin=f.metadata.get("plugin", False),
                secret=f.metadata.get("secret", False), env=f.metadata.get("env"),
            )
            for name in (flag.name, *flag.aliases, *flag.deprecated):
                if name in flags:
                    raise TypeError(f"flag --{name} is defined twice in {cls.__name__}")  # a bug of ours, not input
                flags[name] = flag
    return flags


def convert(flag: Flag, value: Any, where: str) -> Any:
    """Turn text (command line) or a YAML value into the flag's type; raise ConfigError naming `where`."""
    if flag.is_list:
        items = value if isinstance(value, list) else [value]
        if len(items) == 1 and isinstance(items[0], str) and items[0].lower() in _NONE and flag.optional:
            return None
        item_flag = dataclasses.replace(flag, kind=typing.get_args(flag.kind)[0])
        return [convert(item_flag, item, where) for item in items]
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"{where} takes one value, got {len(value)}: {value}")
        value = value[0]
    if isinstance(value, str) and value.lower() in _NONE and (flag.optional or flag.kind is not str):
        return None
    kind, choices = flag.kind, flag.choices
    try:
        if choices is not None:
            text = str(value)
            for choice in choices:
                if text == str(choice):
                    if (why := flag.not_built().get(text)) is not None:
                        raise ConfigError(f"{where} {text}: not built yet ({why})")
                    return choice
            hint = difflib.get_close_matches(text, [str(c) for c in choices], n=1)
            raise ConfigError(
                f"{where} must be one of {', '.join(map(str, choices))}; got {text!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ConfigError(f"{where} takes true or false; got {value!r}")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        if kind is dict or typing.get_origin(kind) is dict:
            return value if isinstance(value, dict) else json.loads(value)
        return str(value) if not isinstance(value, str) else value
    except ConfigError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{where} takes {flag.type_name()}; got {value!r}") from None


def split_argv(argv: Sequence[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Split argv into (flag, values) pairs in order; stray values before any flag are returned apart."""
    pairs: list[tuple[str, list[str]]] = []
    stray: list[str] = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            pairs.append((name.replace("-", "_") if name not in ("config",) else name, [value] if eq else []))
        elif token in ("-h",):
            pairs.append(("help", []))
        elif pairs:
            pairs[-1][1].append(token)
        else:
            stray.append(token)
    return pairs, stray


def _suggest(name: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean --{hint[0]}?" if hint else ""


def load_config_file(path: str) -> dict[str, Any]:
    """Read the YAML (or JSON) mapping of a `--config` file."""
    import yaml  # only when a config file is given

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"--config {where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag: value, got {type(data).__name__}")
    return data


def parse_args(cls: type[T], argv: Sequence[str] | None = None, *, prog: str = "swift") -> T:
    """Parse `argv` (default: sys.argv[1:]) into an instance of the command arguments dataclass `cls`.

    `-h/--help` prints the grouped flag list and exits 0. Errors raise one ConfigError listing every problem.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = collect_flags(cls)
    canonical = sorted({f.name for f in flags.values()})
    pairs, stray = split_argv(argv)
    if any(name == "help" for name, _ in pairs):
        print(format_help(cls, prog=prog))
        raise SystemExit(0)

    errors: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(name: str, raw: Any, where: str) -> None:
        flag = flags.get(name)
        if flag is None:
            prefix = "" if where == f"--{name}" else f"{where}: "
            errors.append(f"{prefix}unknown flag --{name}{_suggest(name, canonical)}")
            return
        if name in flag.deprecated:
            logger.warning("--%s is deprecated; use --%s", name, flag.name)
        if flag.is_bool and raw == []:
            raw = True  # a bare `--flag` means true
        elif raw == []:
            errors.append(f"{where}: --{name} needs a value")
            return
        try:
            values[flag.name] = convert(flag, raw, where if where == f"--{name}" else f"{where}: --{name}")
            sources[flag.name] = where
        except ConfigError as e:
            errors.append(str(e))

    if stray:
        errors.append(f"unexpected argument(s) {' '.join(stray)!r}: flags start with --")
    given: list[tuple[str, Any, str]] = []  # (name, raw value, where), config files first: the command line wins
    for raw in [v for name, v in pairs if name == "config"]:
        if len(raw) != 1:
            errors.append("--config takes one file path")
            continue
        try:
            given += [(str(key), value, f"--config {raw[0]} key {key!r}")
                      for key, value in load_config_file(raw[0]).items()]
        except ConfigError as e:
            errors.append(str(e))
    given += [(name, raw, f"--{name}") for name, raw in pairs if name != "config"]
    # Plugin files register registry entries (a tuner, a reward function...) that other flags may choose: they are
    # read and run first.
    unique = {f.name: f for f in flags.values()}.values()
    is_plugin = [name in flags and flags[name].plugin for name, _, _ in given]
    for (name, raw, where), plugin in zip(given, is_plugin, strict=True):
        if plugin:
            put(name, raw, where)
    for flag in unique:
        if flag.plugin and flag.name in values:
            from swift.core.plugins import load_custom_register

            load_custom_register(values[flag.name], flag=f"--{flag.name}")
    for (name, raw, where), plugin in zip(given, is_plugin, strict=True):
        if not plugin:
            put(name, raw, where)
    for flag in unique:
        if flag.env and flag.name not in values and (value := env.read(flag.env)) is not None:
            try:
                values[flag.name] = convert(flag, value, f"${flag.env} (for --{flag.name})")
            except ConfigError as e:
                errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))

    groups: dict[str, dict[str, Any]] = {}
    for flag_name, value in values.items():
        groups.setdefault(flags[flag_name].group, {})[flag_name] = value
    hints = typing.get_type_hints(cls)
    built = {}
    for group_field in dataclasses.fields(cls):
        try:
            built[group_field.name] = hints[group_field.name](**groups.get(group_field.name, {}))
        except ConfigError as e:  # a group's own __post_init__ checks
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))
    return cls(**built)


def format_help(cls: type, *, prog: str) -> str:
    """Every flag of the command with its type, default and help, grouped by concern."""
    doc = (cls.__doc__ or "").strip()
    lines = [f"usage: {prog} [--config FILE.yaml] [--FLAG VALUE ...]", ""]
    if doc:
        lines += [doc, ""]
    lines += [
        "Flags can also come from --config FILE.yaml (keys are flag names); flags given on the command line win.",
        "Booleans take true/false; list flags take several values (--dataset a.jsonl b.jsonl#100).",
    ]
    seen: set[str] = set()
    current = None
    for flag in collect_flags(cls).values():
        if flag.name in seen:
            continue
        seen.add(flag.name)
        if flag.group_title != current:
            current = flag.group_title
            lines += ["", f"{current}:"]
        names = ", ".join(f"--{n}" for n in (flag.name, *flag.aliases))
        head = f"  {names} {flag.type_name()}"
        shown = str(flag.default).lower() if isinstance(flag.default, bool) else flag.default
        default = "" if flag.default in (None, [], {}) else f" (default: {shown})"
        if flag.env:
            default += f" (default: ${flag.env})"
        old = f" [deprecated: {', '.join('--' + n for n in flag.deprecated)}]" if flag.deprecated else ""
        unbuilt = flag.not_built()
        later = f" [not built yet: {', '.join(unbuilt)}]" if unbuilt else ""
        lines.append(head)
        lines.append(f"      {flag.help}{default}{old}{later}".rstrip())
    return "\n".join(lines)


def to_flat_dict(args: Any) -> dict[str, Any]:
    """The flags of a parsed command as one flat mapping (what `args.json` stores); secrets (`--hub_token`,
    `--api_key`...) are None: they never reach the disk."""
    out: dict[str, Any] = {}
    for group_field in dataclasses.fields(args):
        group = getattr(args, group_field.name)
        out.update(dataclasses.asdict(group))
        for f in dataclasses.fields(group):
            if f.metadata.get("secret"):
                out[f.name] = None
    return out
