"""`swift infer`: pick the front end (dataset, terminal chat or pipe), build the engine, run."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from swift.infer.arguments import InferArguments
from swift.infer.checkpoint import resolve_serve_spec, with_checkpoint_data_args
from swift.infer.engine.tasks import resolve_task

logger = logging.getLogger(__name__)


def load_rows(args: InferArguments, *, require_answer: bool = False) -> Any:
    """The rows to answer: --val_dataset, else the held-out part of --dataset (all of it without a split ratio).
    `require_answer`: drop rows without an answer before the split, as training did (the same held-out rows)."""
    from swift.core.dataset import load_dataset

    data = args.data
    common = {"strict": data.strict, "seed": data.data_seed, "num_proc": data.dataset_num_proc,
              "require_answer": require_answer, "model_name": data.model_name or None,
              "model_author": data.model_author or None, "columns": data.columns}
    if data.val_dataset:
        return load_dataset(data.val_dataset, **common)[0]
    train, val = load_dataset(data.dataset, split_dataset_ratio=data.split_dataset_ratio, **common)
    if val is None and args.infer.load_data_args:
        logger.warning("--load_data_args: the checkpoint was trained without a validation split (no --val_dataset "
                       "or --split_dataset_ratio); answering every row of --dataset, which training saw")
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


def write_metric(result_path: Path, metric: str) -> dict[str, float]:
    """--metric over every answer in `result_path` (a resumed run's earlier ones too), written beside it as
    <name>.metric.json."""
    from swift.core.run import write_json_atomic
    from swift.infer.frontend.metric import score_results

    with result_path.open(encoding="utf-8") as f:
        scores = score_results((json.loads(line) for line in f if line.strip()), metric)
    write_json_atomic(result_path.with_suffix(".metric.json"), {"metric": metric, **scores})
    logger.info("--metric %s: %s", metric, scores)
    return scores


def run_infer(args: InferArguments) -> int:
    from swift.infer.backends import build_engine
    from swift.infer.frontend.batch import default_result_path, run_batch
    from swift.infer.frontend.chat import run_interactive, run_pipe
    from swift.infer.protocol import RequestConfig

    spec = resolve_serve_spec(args)  # flag errors before a dataset or a model loads
    require_answer = False
    if args.infer.load_data_args:
        args, require_answer = with_checkpoint_data_args(args)
    task = resolve_task(args)
    rows = load_rows(args, require_answer=require_answer) if args.data.val_dataset or args.data.dataset else None
    if task.task_type != "causal_lm":
        if args.infer.metric:
            from swift.core import ConfigError

            raise ConfigError(f"--metric {args.infer.metric}: scores generated answers; a {task.task_type} "
                              "checkpoint writes labels, embeddings or scores")
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
            run_batch(engine, rows, config, path, window=2 * args.infer.max_batch_size,
                      write_batch_size=args.infer.write_batch_size)
            print(path, file=sys.stderr)
            if args.infer.metric:
                print(json.dumps(write_metric(path, args.infer.metric), ensure_ascii=False), flush=True)
            return 0
        if sys.stdin.isatty():
            stream = args.infer.stream if args.infer.stream is not None else True
            return run_interactive(engine, config, None, stream=stream, media=media)
        return run_pipe(engine, config, None, sys.stdin, sys.stdout, media=media)
    finally:
        engine.close()
