"""Entry points of `swift infer|deploy|eval|rollout|sample` (registered under `swift.commands`)."""

from __future__ import annotations

from collections.abc import Sequence

from swift.core.cli.runner import not_built, resolve_args
from swift.infer.arguments import DeployArguments, EvalArguments, InferArguments, RolloutArguments, SampleArguments


def infer_main(args: InferArguments | Sequence[str] | None = None) -> int:
    resolve_args(InferArguments, args, prog="swift infer")
    raise not_built("swift infer", "issue 6")


def deploy_main(args: DeployArguments | Sequence[str] | None = None) -> int:
    resolve_args(DeployArguments, args, prog="swift deploy")
    raise not_built("swift deploy", "issue 6")


def eval_main(args: EvalArguments | Sequence[str] | None = None) -> int:
    resolve_args(EvalArguments, args, prog="swift eval")
    raise not_built("swift eval", "issue 9")


def rollout_main(args: RolloutArguments | Sequence[str] | None = None) -> int:
    resolve_args(RolloutArguments, args, prog="swift rollout")
    raise not_built("swift rollout", "issue 7")


def sample_main(args: SampleArguments | Sequence[str] | None = None) -> int:
    resolve_args(SampleArguments, args, prog="swift sample")
    raise not_built("swift sample", "a later issue")
