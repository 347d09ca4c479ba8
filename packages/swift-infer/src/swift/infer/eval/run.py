"""`run_eval`: check the flags and the data, pick the server (ours or --eval_url), run EvalScope, write results.json.

Without --eval_url the model is served by `swift deploy`'s own app inside this process (127.0.0.1, a free port, a
random key), so eval measures what deploy serves: our templates, our engine, per-request adapters. EvalScope runs
in a child process (`swift.infer.eval.worker`) as an OpenAI-API client of that server, with its caches under
$SWIFT_CACHE/eval instead of the user's ~/.cache/modelscope and ~/.cache/huggingface. The child reads its plan from
the run's eval_plan.json and the API key from its environment (SWIFT_API_KEY): the key never reaches the disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from swift.core import ConfigError, SwiftError, env
from swift.infer.arguments import EvalArgs, EvalArguments
from swift.infer.eval.datasets import BenchmarkPlan, check_data_reachable, plan_benchmarks
from swift.infer.eval.endpoint import Endpoint, list_models, normalize_url, own_server, serve_engine
from swift.infer.eval.results import Row, write_results

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "SWIFT_API_KEY"  # how the child gets the key (it reads it with swift.core.env.read)
# Greedy and bounded unless the user says otherwise; few quick retries (EvalScope's default is 5 x 10 s).
DEFAULT_GENERATION = {"temperature": 0.0, "max_tokens": 512, "retries": 1, "retry_interval": 2}


class EvalRunError(SwiftError):
    """EvalScope failed while evaluating."""


@dataclass
class EvalResult:
    run_dir: Path
    models: list[str]  # evaluated model ids: the base first, then named adapters
    rows: list[Row] = field(default_factory=list)

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.json"


def check_eval_flags(args: EvalArguments) -> None:
    ev, problems = args.eval, []
    if ev.eval_limit is not None and ev.eval_limit < 1:
        problems.append(f"--eval_limit {ev.eval_limit}: give at least 1 (or leave it unset for every row)")
    if ev.eval_num_proc < 1:
        problems.append(f"--eval_num_proc {ev.eval_num_proc}: give at least 1")
    if ev.eval_url and (args.infer.adapters or args.infer.ckpt_dir):
        problems.append("--eval_url evaluates a running server: --adapters / --ckpt_dir need our own server "
                        "(leave out --eval_url), or serve them there and pass --model ADAPTER_NAME")
    if ev.eval_generation_config is not None and not isinstance(ev.eval_generation_config, dict):
        problems.append("--eval_generation_config: give a JSON object")
    if problems:
        raise ConfigError("; ".join(problems))


def run_eval(args: EvalArguments) -> EvalResult:
    plans = check_eval_args(args)
    output_dir = Path(args.eval.eval_output_dir)
    if args.eval.eval_url:
        url = normalize_url(args.eval.eval_url)
        listed = list_models(url, args.server.api_key)
        return evaluate(args, Endpoint(url, args.server.api_key, listed), [args.model.model or listed[0]], plans,
                        new_run_dir(output_dir))
    with own_server(args) as endpoint:
        return evaluate(args, endpoint, endpoint.models, plans, new_run_dir(output_dir))


def eval_arguments(eval_args: EvalArgs, *, use_hf: bool = True) -> EvalArguments:
    """`swift eval`'s arguments for an evaluation of a given engine (no model to load, no server flags)."""
    from swift.core.arguments import ModelArgs

    return EvalArguments(model=ModelArgs(use_hf=use_hf), eval=eval_args)


def check_eval_args(args: EvalArguments) -> list[BenchmarkPlan]:
    """The flag, dataset-name and data-reachability checks of an evaluation, before anything runs (ConfigError);
    the benchmarks' plans."""
    check_eval_flags(args)
    plans = plan_benchmarks(args.eval.eval_dataset, args.eval.dataset_args)
    check_data_reachable(plans, "huggingface" if args.model.use_hf else "modelscope")
    return plans


def evaluate_engine(engine, model_name: str, eval_args: EvalArgs, run_dir: Path, *, use_hf: bool = True) -> list[Row]:
    """EvalScope's scores of `engine` (any InferEngine, e.g. a PtEngine around a model being trained) on
    `eval_args.eval_dataset`, served by our app in this process; its reports and results.json go to `run_dir`."""
    args = eval_arguments(eval_args, use_hf=use_hf)
    plans = check_eval_args(args)
    run_dir.mkdir(parents=True, exist_ok=True)
    with serve_engine(engine, model_name) as endpoint:
        return evaluate(args, endpoint, [model_name], plans, run_dir).rows


def new_run_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            continue
        return run_dir
    raise ConfigError(f"--eval_output_dir {root}: cannot make a new run directory")


def evaluate(args: EvalArguments, endpoint: Endpoint, models: list[str], plans: list[BenchmarkPlan],
             run_dir: Path) -> EvalResult:
    tasks = [{"model": model, "work_dir": str(run_dir / _safe(model)), "rows_path": str(run_dir / f".{_safe(model)}"
                                                                                         ".rows.json")}
             for model in models]
    plan = {
        "api_url": endpoint.url, "api_key": "***", "prompt_lang": args.eval.eval_prompt_lang,
        "benchmarks": [{"name": p.name, "options": p.options, "shown_as": p.shown_as} for p in plans],
        "limit": args.eval.eval_limit, "generation_config": {**DEFAULT_GENERATION,
                                                             **(args.eval.eval_generation_config or {})},
        "num_proc": args.eval.eval_num_proc, "dataset_hub": "huggingface" if args.model.use_hf else "modelscope",
        "dataset_dir": str(eval_cache() / "datasets"), "tasks": tasks, "run_dir": str(run_dir),
        "mcq_fallback": args.eval.eval_mcq_fallback,
    }
    plan_path = run_dir / "eval_plan.json"
    plan_path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
    logger.info("evaluating %s on %s at %s", ", ".join(models), ", ".join(p.name for p in plans), endpoint.url)
    code = subprocess.call([sys.executable, "-m", "swift.infer.eval.worker", str(plan_path)],
                           env=worker_env(endpoint.api_key))
    if code != 0:
        raise EvalRunError(f"EvalScope failed (exit {code}); its logs are under {run_dir}")
    rows: list[Row] = []
    for task in tasks:
        rows_path = Path(task["rows_path"])
        for row in json.loads(rows_path.read_text(encoding="utf-8")):
            rows.append({**row, "model": task["model"]} if len(models) > 1 else row)
        rows_path.unlink()
    result = EvalResult(run_dir, models, rows)
    write_results(rows, result.results_path)
    return result


def eval_cache() -> Path:
    return env.swift_cache() / "eval"


def worker_env(api_key: str | None) -> dict[str, str]:
    """The child's environment: the server's API key (never on disk, and not in argv, which `ps` shows to every
    user), EvalScope's, ModelScope's and HF datasets' caches under $SWIFT_CACHE/eval."""
    cache = eval_cache()
    child = {name: value for name, value in os.environ.items() if name != API_KEY_VARIABLE}
    if api_key is not None:
        child[API_KEY_VARIABLE] = api_key
    child.update(MODELSCOPE_CACHE=str(cache / "modelscope"), EVALSCOPE_CACHE=str(cache / "evalscope"),
                 HF_DATASETS_CACHE=str(cache / "huggingface" / "datasets"),
                 HF_HUB_CACHE=str(cache / "huggingface" / "hub"))
    no_proxy = [p for p in child.get("NO_PROXY", child.get("no_proxy", "")).split(",") if p]
    child["NO_PROXY"] = child["no_proxy"] = ",".join([*no_proxy, "127.0.0.1", "localhost"])
    return child


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"

