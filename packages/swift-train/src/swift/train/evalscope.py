"""`--eval_use_evalscope`: at every evaluation, EvalScope benchmarks (`--eval_dataset`, as `swift eval` takes them)
scored on the model being trained, beside the eval loss (ms-swift's evaluation during training).

The live model (adapters switched on) is wrapped in swift-infer's PtEngine and served by `swift deploy`'s app inside
this process, so it answers as the trained checkpoint will once deployed (our template, our engine). Each score is
logged as `eval_<dataset>_<metric>` (`_<subset>` too when a dataset has several), so that
`--metric_for_best_model` and `--early_stop_interval` can select on it; EvalScope's reports go to
`<run>/evalscope/step-<N>/`. Needs `swift-train[eval]` (swift-infer with EvalScope).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FLAGS = ("eval_dataset", "eval_dataset_args", "eval_limit", "eval_generation_config")


class BenchmarksOnly(list):
    """The trainer's eval_dataset when there are benchmarks but no validation rows (transformers refuses
    evaluations without an eval_dataset): no rows, so the evaluation is the benchmarks alone."""


def check_evalscope_args(train: Any, *, use_hf: bool) -> list[str]:
    if not train.eval_use_evalscope:
        given = [f"--{flag}" for flag in FLAGS if getattr(train, flag) not in (None, [])]
        return [f"{', '.join(given)}: take effect only with --eval_use_evalscope true"] if given else []
    try:
        from swift.infer.eval import check_eval_args, eval_arguments
    except ImportError:
        check_eval_args = None
    if check_eval_args is None or importlib.util.find_spec("evalscope") is None:
        return ['--eval_use_evalscope needs swift-infer with EvalScope: pip install "swift-train[eval]"']
    from swift.core import ConfigError, env

    if env.world_size() > 1 or int(os.environ.get("NPROC_PER_NODE") or 1) > 1 or train.deepspeed or train.fsdp:
        return ["--eval_use_evalscope serves the model from the training process: it runs in a one-process run "
                "without --deepspeed / --fsdp (score a distributed run's checkpoints with swift eval --adapters)"]

    try:
        check_eval_args(eval_arguments(_eval_args({flag: getattr(train, flag) for flag in FLAGS}), use_hf=use_hf))
    except ConfigError as e:
        return [str(e)]
    return []


def _eval_args(values: dict[str, Any]) -> Any:
    """swift eval's flag group from ours (ms-swift's names: --eval_dataset_args is swift eval's --dataset_args)."""
    from swift.infer.eval import EvalArgs

    return EvalArgs(eval_dataset=list(values["eval_dataset"] or []), dataset_args=values["eval_dataset_args"],
                    eval_limit=values["eval_limit"], eval_generation_config=values["eval_generation_config"])


def evalscope_metrics(trainer: Any, prefix: str) -> dict[str, float]:
    """EvalScope's scores of the trainer's model now, as `{prefix}_<dataset>[_<subset>]_<metric>`."""
    from swift.infer.engine import PtEngine
    from swift.infer.eval import evaluate_engine

    flat = trainer.swift_args
    template = trainer.data_collator.template
    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
    model.eval()
    model.config.use_cache = True
    name = str(flat.get("model") or "model")
    run_dir = Path(trainer.args.output_dir) / "evalscope" / f"step-{trainer.state.global_step}"
    engine = PtEngine(model, template.tokenizer, template=template, model_name=name,
                      max_batch_size=max(1, trainer.args.per_device_eval_batch_size))
    try:
        rows = evaluate_engine(engine, name, _eval_args({flag: flat.get(flag) for flag in FLAGS}), run_dir,
                               use_hf=flat.get("use_hf", True))
    finally:
        engine.close()
        model.config.use_cache = use_cache
        model.train(was_training)
    subsets: dict[str, set[str]] = {}
    for row in rows:
        subsets.setdefault(row["dataset"], set()).add(row["subset"])
    metrics = {}
    for row in rows:
        subset = f"_{row['subset']}" if len(subsets[row["dataset"]]) > 1 else ""
        metrics[f"{prefix}_{row['dataset']}{subset}_{row['metric']}"] = float(row["score"])
    logger.info("evalscope at step %d: %s", trainer.state.global_step,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics
