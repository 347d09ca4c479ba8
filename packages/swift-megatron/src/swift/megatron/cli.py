"""`megatron sft|pt|rlhf|export`: Swift on Megatron-Core (console script of swift-megatron).

Flags are checked before anything heavy loads; `NPROC_PER_NODE` (with NNODES, NODE_RANK, MASTER_ADDR,
MASTER_PORT) makes `sft`/`pt`/`rlhf` start torchrun itself, as ms-swift users expect.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from swift.core.cli import EXIT_USAGE, resolve_args, run_command
from swift.megatron.arguments import MegatronArguments, MegatronRlhfArguments, check_export_args, check_train_args

SUBCOMMANDS = {"sft": "Megatron supervised fine-tuning", "pt": "Megatron pre-training",
               "rlhf": "Megatron RLHF (--rlhf_type dpo|grpo)", "export": "HF <-> mcore conversion"}


def sft_main(args: MegatronArguments | Sequence[str] | None = None):
    return _train("sft", args)


def pt_main(args: MegatronArguments | Sequence[str] | None = None):
    return _train("pt", args)


def rlhf_main(args: MegatronRlhfArguments | Sequence[str] | None = None):
    return _train("rlhf", args)


def _train(command: str, args: MegatronArguments | Sequence[str] | None):
    cls = MegatronRlhfArguments if command == "rlhf" else MegatronArguments
    parsed = resolve_args(cls, args, prog=f"megatron {command}")
    check_train_args(parsed, pretrain=command == "pt")  # bad flags fail in a second, before megatron.core loads or processes start
    if not isinstance(args, MegatronArguments):
        from swift.core.run import relaunch_under_torchrun

        argv = list(sys.argv[2:] if args is None else args)
        if (code := relaunch_under_torchrun(command, argv, module="swift.megatron.cli")) is not None:
            return code
    _require_megatron()
    from swift.megatron.train import run_train

    return run_train(parsed, pretrain=command == "pt")


def export_main(args: MegatronArguments | Sequence[str] | None = None):
    parsed = resolve_args(MegatronArguments, args, prog="megatron export")
    check_export_args(parsed)
    _require_megatron()
    from swift.megatron.export import run_export

    return run_export(parsed)


def _require_megatron() -> None:
    from swift.core import require_backend

    require_backend("megatron.core", extra="swift-train[megatron]")


COMMANDS = {"sft": sft_main, "pt": pt_main, "rlhf": rlhf_main, "export": export_main}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: megatron {sft,pt,rlhf,export} [--FLAG VALUE ...]      megatron <command> --help\n")
        print("\n".join(f"  {name:<8}{text}" for name, text in SUBCOMMANDS.items()))
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown megatron command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    return run_command(COMMANDS[argv[0]], argv[1:])


if __name__ == "__main__":  # torchrun workers: python -m swift.megatron.cli <command> <flags>
    sys.exit(main())
