"""`swift infer`: pick the front end (dataset, terminal chat or pipe), build the engine, run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from swift.infer.arguments import InferArguments
from swift.infer.checkpoint import resolve_serve_spec
from swift.infer.engine.tasks import resolve_task

logger = logging.getLogger(__name__)


def load_rows(args: InferArguments) -> Any:
    """The rows to answer: --val_dataset, else the held-out part of --dataset (all of it without a split ratio)."""
    from swift.core.dataset import load_dataset

    data = args.data
    common = {"strict": data.strict, "seed": data.data_seed, "num_proc": data.dataset_num_proc,
              "require_answer": False, "model_name": data.model_name or None, "model_author": data.model_author or None}
    if data.val_dataset:
        return load_dataset(data.val_dataset, **common)[0]
    train, val = load_dataset(data.dataset, split_dataset_ratio=data.split_dataset_ratio, **common)
    return val if val is not None else train


def run_task_infer(args: InferArguments, spec: Any, task: Any, rows: Any) -> int:
    """An encoder-task checkpoint (seq_cls, embedding, reranker): the rows scored into --result_path."""
    from swift.core import ConfigError
    from swift.infer.engine.tasks import TaskEngine
    from swift.infer.frontend.batch import default_result_path
    from swift.infer.frontend.tasks import run_task_batch

    if rows is None:
        raise ConfigError(f"--task_type {task.task_type}: swift infer scores a dataset (--val_dataset FILE "
                          "--result_path OUT); serve requests with swift deploy")
    engine = TaskEngine(args, spec, task, model_name=spec.model)
    path = Path(args.infer.result_path) if args.infer.result_path else default_result_path(_checkpoint_of(args))
    run_task_batch(engine, rows, path)
    print(path, file=sys.stderr)
    return 0


def _checkpoint_of(args: InferArguments) -> str | None:
    if args.infer.ckpt_dir or not args.infer.adapters:
        return args.infer.ckpt_dir
    return args.infer.adapters[0].partition("=")[2] or args.infer.adapters[0]


def run_infer(args: InferArguments) -> int:
    from swift.infer.backends import build_engine
    from swift.infer.frontend.batch import default_result_path, run_batch
    from swift.infer.frontend.chat import run_interactive, run_pipe
    from swift.infer.protocol import RequestConfig

    spec = resolve_serve_spec(args)  # flag errors before a dataset or a model loads
    task = resolve_task(args)
    rows = load_rows(args) if args.data.val_dataset or args.data.dataset else None
    if task.task_type != "causal_lm":
        return run_task_infer(args, spec, task, rows)
    engine = build_engine(args)
    config = RequestConfig()  # the sampling flags are the engine's defaults
    media = {"images": list(args.chat.image), "videos": list(args.chat.video), "audios": list(args.chat.audio)}
    media = {k: v for k, v in media.items() if v}
    if media and rows is not None:
        from swift.core import ConfigError

        raise ConfigError("--image/--video/--audio are for chat and pipe mode; a dataset's rows carry their own "
                          "media (images / videos / audios columns)")
    try:
        if rows is not None:
            base = args.infer.ckpt_dir or (args.infer.adapters[0].partition("=")[2] or args.infer.adapters[0]
                                           if args.infer.adapters else None)
            path = Path(args.infer.result_path) if args.infer.result_path else default_result_path(base)
            run_batch(engine, rows, config, path, window=2 * args.infer.max_batch_size)
            print(path, file=sys.stderr)
            return 0
        if sys.stdin.isatty():
            stream = args.infer.stream if args.infer.stream is not None else True
            return run_interactive(engine, config, None, stream=stream, media=media)
        return run_pipe(engine, config, None, sys.stdin, sys.stdout, media=media)
    finally:
        engine.close()
