"""Entry points of `swift sft|pt|rlhf|export|merge-lora` (registered under `swift.commands`).

Each takes a parsed arguments dataclass or flag strings. Flags and files are checked first, with nothing heavy
imported (a wrong path is reported in about a second); then the command relaunches itself under torchrun / srun /
Ray when asked to, and only then imports the training stack.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from swift.core.cli import resolve_args, run_command
from swift.train.arguments import ExportArguments, PtArguments, RlhfArguments, SftArguments


def sft_main(args: SftArguments | Sequence[str] | None = None):
    return _train("sft", SftArguments, args)


def pt_main(args: PtArguments | Sequence[str] | None = None):
    return _train("pt", PtArguments, args)


def rlhf_main(args: RlhfArguments | Sequence[str] | None = None):
    return _train("rlhf", RlhfArguments, args)


def _train(command: str, cls: type, args: Any):
    """Parse and check the flags (nothing heavy imported), then train here, or start the processes that will: Ray
    Train workers (--use_ray), torchrun (NPROC_PER_NODE) or this task's rank of a multi-task srun. Python API callers
    (a parsed dataclass) train here."""
    parsed = resolve_args(cls, args, prog=f"swift {command}")
    if command == "rlhf":
        from swift.train.rlhf.run import check_rlhf_args

        check_rlhf_args(parsed)
    else:
        from swift.train.recipe import check_args

        check_args(parsed)
    if parsed.train.use_ray:
        from swift.train.ray_launch import run_with_ray

        return run_with_ray(COMMANDS[command], parsed)
    if not isinstance(args, cls):
        from swift.core.run import relaunch_under_torchrun

        argv = list(sys.argv[1:] if args is None else args)
        if (code := relaunch_under_torchrun(command, argv, module="swift.train.cli")) is not None:
            return code
    if command == "rlhf":
        from swift.train.rlhf import run_rlhf

        return run_rlhf(parsed)
    from swift.train.sft import run_sft

    return run_sft(parsed, pretrain=command == "pt")


def export_main(args: ExportArguments | Sequence[str] | None = None):
    from swift.train.export import ExportResult, run_export

    result = run_export(resolve_args(ExportArguments, args, prog="swift export"))
    if isinstance(result, ExportResult) and result.report is not None and not isinstance(args, ExportArguments):
        import json

        print(json.dumps(result.report, indent=2, ensure_ascii=False))  # the CLI shows what the export kept
    return result


def merge_lora_main(args: Sequence[str] | None = None) -> int:
    """`swift merge-lora ...` is `swift export --merge_lora true ...`."""
    return export_main([*(sys.argv[1:] if args is None else args), "--merge_lora", "true"])


COMMANDS = {"sft": sft_main, "pt": pt_main, "rlhf": rlhf_main, "export": export_main, "merge-lora": merge_lora_main}

if __name__ == "__main__":  # torchrun workers: python -m swift.train.cli <command> <flags>
    sys.exit(run_command(COMMANDS[sys.argv[1]], sys.argv[2:]))
