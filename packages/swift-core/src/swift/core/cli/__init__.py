"""The `swift` command-line dispatcher and what every command's entry point shares."""

from swift.core.cli.main import EXIT_USAGE, run_command
from swift.core.cli.runner import NotImplementedYetError, not_built, resolve_args

__all__ = ["EXIT_USAGE", "NotImplementedYetError", "not_built", "resolve_args", "run_command"]
