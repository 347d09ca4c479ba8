"""Entry points of `swift infer|deploy|eval|rollout|sample` (registered under `swift.commands`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swift.core import ConfigError
from swift.core.cli import resolve_args
from swift.infer.arguments import DeployArguments, EvalArguments, InferArguments, RolloutArguments, SampleArguments


def infer_main(args: InferArguments | Sequence[str] | None = None) -> int:
    """`swift infer`: chat in a terminal, answer lines from a pipe, or answer a dataset into --result_path."""
    parsed = resolve_args(InferArguments, args, prog="swift infer")
    from swift.infer.frontend.infer import run_infer

    return run_infer(parsed)


def dataset_run_only(parsed: Any, command: str) -> None:
    """The flags of swift infer's dataset runs (shared in the inference group) are refused where nothing reads them."""
    infer = parsed.infer
    given = [flag for flag, on in (("--load_data_args", infer.load_data_args), ("--metric", infer.metric),
                                   ("--write_batch_size", infer.write_batch_size != 1000)) if on]
    if given:
        raise ConfigError(f"{', '.join(given)}: swift infer's dataset runs take {'it' if len(given) == 1 else 'them'}; "
                          f"swift {command} does not run a dataset")


def deploy_main(args: DeployArguments | Sequence[str] | None = None) -> int:
    """`swift deploy`: an OpenAI-compatible HTTP server (chat, completions, models, health, metrics)."""
    parsed = resolve_args(DeployArguments, args, prog="swift deploy")
    dataset_run_only(parsed, "deploy")
    from swift.infer.server.serve import run_server

    return run_server(parsed)


def eval_main(args: EvalArguments | Sequence[str] | None = None) -> int:
    """`swift eval`: EvalScope on our own server (started in process) or on --eval_url; a table and results.json."""
    parsed = resolve_args(EvalArguments, args, prog="swift eval")
    dataset_run_only(parsed, "eval")
    from swift.infer.eval import format_table, run_eval

    result = run_eval(parsed)
    print(format_table(result.rows, result.models), flush=True)
    print(f"results: {result.results_path}", flush=True)
    return 0


def rollout_main(args: RolloutArguments | Sequence[str] | None = None) -> int:
    """`swift rollout`: vLLM for a GRPO trainer in another process, with weight updates (see routes/rollout.py)."""
    parsed = resolve_args(RolloutArguments, args, prog="swift rollout")
    dataset_run_only(parsed, "rollout")
    if parsed.infer.vllm_use_async_engine:
        raise ConfigError("--vllm_use_async_engine true: swift rollout loads the trainer's weights into vLLM's model, "
                          "which only the in-process engine exposes; leave it unset")
    parsed.infer.vllm_use_async_engine = False
    from swift.infer.server.serve import run_server

    return run_server(parsed, rollout=True)


def sample_main(args: SampleArguments | Sequence[str] | None = None) -> int:
    """`swift sample`: N scored answers per prompt into jsonl (see swift/infer/sample.py)."""
    parsed = resolve_args(SampleArguments, args, prog="swift sample")
    dataset_run_only(parsed, "sample")
    from swift.infer.sample import check_sample_args, run_sample

    check_sample_args(parsed)
    print(run_sample(parsed), flush=True)
    return 0
