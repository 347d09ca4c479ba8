"""Entry points of `swift infer|deploy|eval|rollout|sample` (registered under `swift.commands`)."""

from __future__ import annotations

from collections.abc import Sequence

from swift.core.cli import not_built, resolve_args
from swift.infer.arguments import DeployArguments, EvalArguments, InferArguments, RolloutArguments, SampleArguments


def infer_main(args: InferArguments | Sequence[str] | None = None) -> int:
    """`swift infer`: chat in a terminal, answer lines from a pipe, or answer a dataset into --result_path."""
    parsed = resolve_args(InferArguments, args, prog="swift infer")
    from swift.infer.frontend.infer import run_infer

    return run_infer(parsed)


def deploy_main(args: DeployArguments | Sequence[str] | None = None) -> int:
    """`swift deploy`: an OpenAI-compatible HTTP server (chat, completions, models, health, metrics)."""
    parsed = resolve_args(DeployArguments, args, prog="swift deploy")
    from swift.infer.server.serve import run_server

    return run_server(parsed)


def eval_main(args: EvalArguments | Sequence[str] | None = None) -> int:
    """`swift eval`: EvalScope on our own server (started in process) or on --eval_url; a table and results.json."""
    parsed = resolve_args(EvalArguments, args, prog="swift eval")
    from swift.infer.eval import format_table, run_eval

    result = run_eval(parsed)
    print(format_table(result.rows, result.models), flush=True)
    print(f"results: {result.results_path}", flush=True)
    return 0


def rollout_main(args: RolloutArguments | Sequence[str] | None = None) -> int:
    resolve_args(RolloutArguments, args, prog="swift rollout")
    raise not_built("swift rollout", "issue 7")


def sample_main(args: SampleArguments | Sequence[str] | None = None) -> int:
    resolve_args(SampleArguments, args, prog="swift sample")
    raise not_built("swift sample", "a later issue")
