"""`swift deploy`: build the engine, then serve it with uvicorn until SIGINT / SIGTERM (which drain: requests in
flight finish, new connections are refused)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from swift.core import ConfigError
from swift.infer.arguments import DeployArguments

logger = logging.getLogger(__name__)


def check_server_flags(args: DeployArguments) -> None:
    server, problems = args.server, []
    if not 0 <= server.port <= 65535:
        problems.append(f"--port {server.port}: give a port from 0 to 65535")
    if server.max_concurrency is not None and server.max_concurrency < 1:
        problems.append(f"--max_concurrency {server.max_concurrency}: give at least 1 (or leave it unset)")
    if server.api_key is not None and not server.api_key.strip():
        problems.append("--api_key: the key is empty")
    if problems:
        raise ConfigError("; ".join(problems))


def build_task_engine(args: DeployArguments, spec: Any, model_name: str) -> Any:
    """A TaskEngine for an encoder-task checkpoint (--task_type, or the one its args.json records), else None."""
    from swift.infer.engine.tasks import TaskEngine, resolve_task

    task = resolve_task(args)
    if task.task_type == "causal_lm":
        return None
    if args.infer.infer_backend != "pt":
        raise ConfigError(f"--task_type {task.task_type} with --infer_backend {args.infer.infer_backend}: encoder "
                          "tasks are served by the PyTorch engine; leave --infer_backend unset")
    return TaskEngine(args, spec, task, model_name=model_name)


def run_server(args: DeployArguments, *, rollout: bool = False) -> int:
    """Serve until SIGINT / SIGTERM. `rollout`: also the /rollout routes of `swift rollout` (weight updates)."""
    import uvicorn

    from swift.infer.backends import build_engine
    from swift.infer.checkpoint import resolve_serve_spec
    from swift.infer.server.app import ServerOptions, build_app

    check_server_flags(args)
    spec = resolve_serve_spec(args)
    model_name = args.server.served_model_name or spec.model
    engine = build_task_engine(args, spec, model_name) or build_engine(args, model_name=model_name)
    if args.server.host not in ("127.0.0.1", "localhost", "::1") and args.server.api_key is None:
        logger.warning("--host %s without --api_key: anyone who reaches this address can use the model",
                       args.server.host)
    app = build_app(engine, ServerOptions(model_name=model_name, api_key=args.server.api_key,
                                          max_concurrency=args.server.max_concurrency,
                                          log_interval=args.server.log_interval, rollout=rollout))
    config = uvicorn.Config(app, host=args.server.host, port=args.server.port, log_level="info",
                            timeout_keep_alive=30, access_log=False)
    server = uvicorn.Server(config)
    what = "rollouts of" if rollout else "serving"
    print(f"{what} {model_name} at http://{args.server.host}:{args.server.port}/v1", file=sys.stderr, flush=True)
    server.run()
    return 0
