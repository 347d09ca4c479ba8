"""The EvalScope side of `swift eval`, run as `python -m swift.infer.eval.worker PLAN.json` in a child process.

A child process because EvalScope reads its cache locations from the environment at import time, and Swift's
library code never writes `os.environ`: the parent passes SWIFT_CACHE-based locations in the child's environment,
and the server's API key as SWIFT_API_KEY (the plan file holds "***").
The child writes one JSON list of result rows per model and exits non-zero with a one-line reason on failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

logger = logging.getLogger("swift.infer.eval")

# general_mcq / general_qa ship Chinese prompts; English ones score what the model knows, not how it reads Chinese
# (measured on the packaged model: 10 % on easy rows with the Chinese prompt, 20 % with the English one).
ENGLISH_QA_PROMPT = "{question}"


def english_prompt(plan: dict[str, Any]) -> str | None:
    """The English prompt for a benchmark whose default prompt is Chinese, unless the user chose one."""
    from evalscope.utils.multi_choices import MultipleChoiceTemplate as T

    options = plan["options"]
    if "prompt_template" in options:
        return None
    if plan["name"] == "general_mcq":
        extra = options.get("extra_params", {})
        multiple, cot = extra.get("multiple_correct", False), extra.get("use_cot", False)
        if multiple:
            return T.MULTIPLE_ANSWER_COT if cot else T.MULTIPLE_ANSWER
        return T.SINGLE_ANSWER_COT if cot else T.SINGLE_ANSWER
    if plan["name"] == "general_qa":
        return ENGLISH_QA_PROMPT
    return None


def has_punkt_tab() -> bool:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        return False
    return True


def dataset_args(plans: list[dict[str, Any]], prompt_lang: str) -> dict[str, dict[str, Any]]:
    out = {}
    for plan in plans:
        options = dict(plan["options"])
        if prompt_lang == "en" and (prompt := english_prompt(plan)) is not None:
            options["prompt_template"] = prompt
        if plan["name"] == "general_qa":
            metrics = options.get("metric_list", ["BLEU", "Rouge"])
            if "BLEU" in metrics and not has_punkt_tab():
                # EvalScope scores BLEU 0 on every row when NLTK's punkt_tab data is missing: leave it out instead.
                logger.warning("general_qa: BLEU left out: NLTK's punkt_tab data is missing (install it with "
                               "`python -m nltk.downloader punkt_tab`)")
                metrics = [m for m in metrics if m != "BLEU"]
            options["metric_list"] = metrics
        out[plan["name"]] = options
    return out


def report_rows(reports: dict[str, Any], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EvalScope reports -> rows {dataset, subset, metric, score, num}, one per real (not aggregate) subset."""
    shown = {plan["name"]: plan["shown_as"] for plan in plans}
    rows = []
    for name, report in reports.items():
        for metric in getattr(report, "metrics", []):
            for category in metric.categories:
                for subset in category.subsets:
                    if subset.is_aggregate:
                        continue
                    rows.append({"dataset": shown.get(name, {}).get(subset.name, name), "subset": subset.name,
                                 "metric": metric_name(metric), "score": float(subset.score),
                                 "num": int(subset.num)})
    return rows


class QuietConsole(logging.Filter):
    """EvalScope logs every step at INFO to the console (its tables, its config), drowning the progress bars and our
    table: its INFO records go to a file of the run instead; warnings and errors still reach the console."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self.file.handle(record)
        return False


def metric_name(metric: Any) -> str:
    """`accuracy`, `rouge[variant=l,statistic=recall]`: EvalScope's metric identity without its default `:mean`."""
    identity = getattr(metric, "identity", None)
    if identity is None:
        return str(metric.name)
    name = identity.name
    if identity.dimensions:
        name += "[" + ",".join(f"{k}={v}" for k, v in identity.dimensions.items()) + "]"
    return name if identity.aggregation == "mean" else f"{name}:{identity.aggregation}"


def run(plan_path: str) -> int:
    from evalscope.run import run_task

    from swift.core import env
    from swift.infer.eval.compat import mcq_label_fallback

    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    api_key = env.read("SWIFT_API_KEY")  # the parent's key, passed in the environment: the plan on disk has none
    logging.getLogger("evalscope").addFilter(QuietConsole(Path(plan["run_dir"]) / "evalscope.log"))
    for name in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    args = dataset_args(plan["benchmarks"], plan["prompt_lang"])
    for task in plan["tasks"]:
        config = {
            "model": task["model"], "api_url": plan["api_url"], "api_key": api_key or "EMPTY",
            "eval_type": "openai_api", "datasets": list(args), "dataset_args": args, "limit": plan["limit"],
            "generation_config": plan["generation_config"], "eval_batch_size": plan["num_proc"],
            "work_dir": task["work_dir"], "no_timestamp": True, "dataset_hub": plan["dataset_hub"],
            "dataset_dir": plan["dataset_dir"],
        }
        try:
            with mcq_label_fallback() if plan["mcq_fallback"] else contextlib.nullcontext():
                reports = run_task(config)
        except Exception as e:  # noqa: BLE001 -- any EvalScope failure: one line here, the traceback in the log
            log = Path(task["work_dir"]) / "swift_eval_error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc(), encoding="utf-8")
            print(f"swift eval: EvalScope failed on {task['model']}: {type(e).__name__}: {e} (traceback: {log})",
                  file=sys.stderr)
            return 1
        rows = report_rows(reports, plan["benchmarks"])
        Path(task["rows_path"]).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
