"""`swift`: a thin dispatcher to the subcommands that installed members register.

Nothing heavy is imported here: `swift --help` and `swift <cmd> --help` must stay fast, and each command imports
torch and friends only once it runs.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from swift.core.cli.commands import COMMANDS, ENTRY_POINT_GROUP, install_line
from swift.core.errors import ConfigError, SwiftError

MEMBERS = ("swift-core", "swift-tuners", "swift-train", "swift-infer", "swift-megatron", "swift-ui")
EXIT_USAGE = 2


def installed_commands() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def format_overview(installed: dict[str, metadata.EntryPoint]) -> str:
    lines = [
        "usage: swift <command> [--FLAG VALUE ...]      swift <command> --help     swift --version",
        "",
        "Fine-tune and serve large language models.",
        "",
        "commands:",
    ]
    names = list(COMMANDS) + sorted(n for n in installed if n not in COMMANDS)
    width = max(len(n) for n in names) + 2
    for name in names:
        info = COMMANDS.get(name)
        if info is None:
            ep = installed[name]
            dist = ep.dist.name if ep.dist is not None else "a plugin"
            lines.append(f"  {name:<{width}}(plugin from {dist})")
            continue
        missing = "" if name in installed else f"  [not installed: {install_line(info.package)}]"
        lines.append(f"  {name:<{width}}{info.description}{missing}")
    lines += ["", "Megatron-Core training is the `megatron` command (pip install \"swift-train[megatron]\")."]
    return "\n".join(lines)


def format_versions() -> str:
    lines = []
    for dist in MEMBERS:
        try:
            lines.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines)


# Lines third-party libraries print at import on every CPU run, which read as errors and ask nothing of the user:
# (logger, start of the message). Other messages of the same loggers still show.
_IMPORT_NOISE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),  # an optional nf4-on-CPU kernel
    ("DeepSpeed", "Setting accelerator to CPU"),  # DeepSpeed found no GPU: it is imported, not used, on CPU runs
)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s:%(name)s] %(message)s", stream=sys.stderr)
    for name, prefix in _IMPORT_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))


def run_command(fn: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a command callable, turning Swift's own errors into a message and an exit code."""
    _configure_logging()
    try:
        code = fn(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SwiftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code if isinstance(code, int) else 0  # Python API callers get result objects; the CLI, an exit code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # The reader went away (`swift sft --help | head`): stop quietly, as the Python docs advise (point stdout at
        # devnull, so that flushing it at exit does not raise a second time).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(format_overview(installed_commands()))
        return 0
    if argv[0] in ("-V", "--version"):
        print(format_versions())
        return 0
    name, rest = argv[0], argv[1:]
    installed = installed_commands()
    if name not in installed:
        info = COMMANDS.get(name)
        if info is not None:
            print(
                f"swift {name} is provided by {info.package}, which is not installed.\n"
                f"Install it with: {install_line(info.package)}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        hint = difflib.get_close_matches(name, list(COMMANDS) + list(installed), n=1)
        suggestion = f"; did you mean `swift {hint[0]}`?" if hint else ""
        print(f"error: unknown command {name!r}{suggestion} (see swift --help)", file=sys.stderr)
        return EXIT_USAGE
    return run_command(installed[name].load(), rest)


if __name__ == "__main__":
    sys.exit(main())
