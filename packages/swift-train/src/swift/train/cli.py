"""Entry points of `swift sft|pt|rlhf|export|merge-lora` (registered under `swift.commands`).

Each takes a parsed arguments dataclass or flag strings; only light modules are imported before the work starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from swift.core.cli.main import run_command
from swift.core.cli.runner import resolve_args
from swift.train.arguments import ExportArguments, PtArguments, RlhfArguments, SftArguments
from swift.train.launch import relaunch_under_torchrun


def sft_main(args: SftArguments | Sequence[str] | None = None):
    parsed = resolve_args(SftArguments, args, prog="swift sft")  # flags are checked before any process starts
    if not isinstance(args, SftArguments) and (
            code := relaunch_under_torchrun("sft", _argv(args), parsed=parsed)) is not None:
        return code
    from swift.train.sft import run_sft

    return run_sft(parsed)


def pt_main(args: PtArguments | Sequence[str] | None = None):
    parsed = resolve_args(PtArguments, args, prog="swift pt")
    if not isinstance(args, PtArguments) and (
            code := relaunch_under_torchrun("pt", _argv(args), parsed=parsed)) is not None:
        return code
    from swift.train.sft import run_sft

    return run_sft(parsed, pretrain=True)


def _argv(args: Sequence[str] | None) -> list[str]:
    return list(sys.argv[1:] if args is None else args)


def rlhf_main(args: RlhfArguments | Sequence[str] | None = None):
    parsed = resolve_args(RlhfArguments, args, prog="swift rlhf")
    if not isinstance(args, RlhfArguments) and (
            code := relaunch_under_torchrun("rlhf", _argv(args), parsed=parsed)) is not None:
        return code
    from swift.train.rlhf import run_rlhf

    return run_rlhf(parsed)


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
