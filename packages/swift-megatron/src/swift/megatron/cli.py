"""`megatron sft|pt|rlhf|export`: Swift on Megatron-Core (console script of swift-megatron)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from swift.core.arguments import DataArgs, ModelArgs, TemplateArgs, arg
from swift.core.cli.main import EXIT_USAGE, run_command
from swift.core.cli.runner import not_built, resolve_args
from swift.tuners.arguments import TunerArgs


@dataclass
class MegatronArgs:
    """Megatron"""

    train_iters: int | None = arg(None, "optimizer steps")
    micro_batch_size: int = arg(1, "rows per micro-batch")
    global_batch_size: int = arg(16, "rows per optimizer step across data-parallel ranks")
    lr: float = arg(1e-5, "peak learning rate")
    min_lr: float = arg(0.0, "final learning rate")
    lr_warmup_iters: int = arg(0, "warm-up steps")
    save: str | None = arg(None, "output directory", aliases=["output_dir"])
    load: str | None = arg(None, "mcore checkpoint to start from")
    save_interval: int = arg(500, "checkpoint every N steps")
    log_interval: int = arg(5, "log every N steps")
    seed: int = arg(42, "random seed")
    tensor_model_parallel_size: int = arg(1, "tensor parallel ranks")
    pipeline_model_parallel_size: int = arg(1, "pipeline parallel ranks")
    sequence_parallel: bool = arg(False, "sequence parallelism (with tensor parallelism)")
    context_parallel_size: int = arg(1, "context parallel ranks")
    expert_model_parallel_size: int = arg(1, "expert parallel ranks (MoE)")
    recompute_granularity: str | None = arg(None, "activation recompute: full or selective")
    use_distributed_optimizer: bool = arg(True, "shard optimizer state across data-parallel ranks")
    to_mcore: bool = arg(False, "export: HF -> mcore")
    to_hf: bool = arg(False, "export: mcore -> HF")
    mcore_model: str | None = arg(None, "export: the mcore checkpoint to convert")


@dataclass
class MegatronArguments:
    """Swift on Megatron-Core."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    template: TemplateArgs = field(default_factory=TemplateArgs)
    tuner: TunerArgs = field(default_factory=TunerArgs)
    megatron: MegatronArgs = field(default_factory=MegatronArgs)


SUBCOMMANDS = {"sft": "Megatron supervised fine-tuning", "pt": "Megatron pre-training",
               "rlhf": "Megatron DPO", "export": "HF <-> mcore conversion"}


def _run(sub: str, argv: list[str]) -> int:
    resolve_args(MegatronArguments, argv, prog=f"megatron {sub}")
    raise not_built(f"megatron {sub}", "issue 11")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: megatron {sft,pt,rlhf,export} [--FLAG VALUE ...]\n")
        print("\n".join(f"  {name:<8}{text}" for name, text in SUBCOMMANDS.items()))
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown megatron command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    return run_command(lambda rest: _run(argv[0], rest), argv[1:])
