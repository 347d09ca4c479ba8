"""Which EvalScope benchmarks `--eval_dataset` names, with what options, and whether their data can be had.

Users type the names they know from ms-swift (`ARC_c`, `gsm8k`, `mmlu`, ...); EvalScope's own names work too. This
module reads EvalScope's benchmark index as a file (nothing of EvalScope is imported here), so bad names and the
no-hub case fail in well under a second, before any model loads.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swift.core import ConfigError, MissingBackendError, env

# Names from ms-swift that are not EvalScope benchmark names: name -> (EvalScope benchmark, options it implies).
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ARC_c": ("arc", {"subset_list": ["ARC-Challenge"]}),
    "ARC_e": ("arc", {"subset_list": ["ARC-Easy"]}),
}
# Benchmarks that read only the user's files (`local_path`): no hub is ever needed for them.
LOCAL_ONLY = frozenset({"general_mcq", "general_qa"})
HUB_HOSTS = {"modelscope": "www.modelscope.cn", "huggingface": "huggingface.co"}


@dataclass
class BenchmarkPlan:
    """One EvalScope benchmark to run, and the user's names for its subsets."""

    name: str  # EvalScope's benchmark name
    options: dict[str, Any] = field(default_factory=dict)  # its dataset_args entry
    shown_as: dict[str, str] = field(default_factory=dict)  # subset -> the dataset name to print (the user's)
    typed: list[str] = field(default_factory=list)  # what the user typed for it


def benchmark_index() -> dict[str, str]:
    """EvalScope's benchmark names (its `benchmarks/_index.json`), read without importing EvalScope."""
    spec = importlib.util.find_spec("evalscope")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError("evalscope", extra="swift-infer[eval]")
    index = Path(next(iter(spec.submodule_search_locations))) / "benchmarks" / "_index.json"
    return json.loads(index.read_text(encoding="utf-8"))


def plan_benchmarks(names: list[str], dataset_args: dict[str, Any] | None) -> list[BenchmarkPlan]:
    """`--eval_dataset` + `--dataset_args` -> one plan per EvalScope benchmark; every bad name reported at once."""
    if not names:
        raise ConfigError("--eval_dataset: name at least one dataset, e.g. --eval_dataset general_mcq "
                          "--dataset_args '{\"general_mcq\": {\"local_path\": \"DIR\"}}'")
    index, user_args = benchmark_index(), dict(dataset_args or {})
    by_lower = {name.lower(): name for name in [*index, *ALIASES]}
    plans: dict[str, BenchmarkPlan] = {}
    problems: list[str] = []
    for typed in names:
        known = typed if typed in index or typed in ALIASES else by_lower.get(typed.lower())
        if known is None:
            hint = difflib.get_close_matches(typed, [*ALIASES, *index], n=3, cutoff=0.5)
            problems.append(f"--eval_dataset {typed}: no such EvalScope benchmark"
                            + (f"; did you mean {', '.join(hint)}?" if hint else ""))
            continue
        name, implied = ALIASES.get(known, (known, {}))
        options = {**copy.deepcopy(implied), **user_args.pop(typed, {}), **user_args.pop(known, {})}
        plan = plans.setdefault(name, BenchmarkPlan(name))
        plan.typed.append(typed)
        _merge_options(plan, options, problems)
        for subset in implied.get("subset_list", []):
            plan.shown_as[subset] = typed
    for name, options in user_args.items():
        plan = plans.get(name)
        if plan is None:
            problems.append(f"--dataset_args: {name!r} is not among --eval_dataset ({', '.join(names)})")
        else:
            _merge_options(plan, options, problems)
    for plan in plans.values():
        if not isinstance(plan.options, dict):
            problems.append(f"--dataset_args: the entry of {plan.name} must be a JSON object")
        elif plan.name in LOCAL_ONLY and not plan.options.get("local_path"):
            problems.append(f"--eval_dataset {plan.typed[0]}: give its files with --dataset_args "
                            f"'{{\"{plan.typed[0]}\": {{\"local_path\": \"DIR\"}}}}'")
        elif plan.options.get("local_path") and not Path(plan.options["local_path"]).exists():
            problems.append(f"--dataset_args: local_path {plan.options['local_path']} of {plan.typed[0]} "
                            "does not exist")
    if problems:
        raise ConfigError("; ".join(problems))
    return list(plans.values())


def _merge_options(plan: BenchmarkPlan, options: Any, problems: list[str]) -> None:
    if not isinstance(options, dict):
        problems.append(f"--dataset_args: the entry of {plan.typed[0]} must be a JSON object, got {options!r}")
        return
    subsets = plan.options.get("subset_list", []) + [s for s in options.get("subset_list", [])
                                                     if s not in plan.options.get("subset_list", [])]
    plan.options.update(options)
    if subsets:
        plan.options["subset_list"] = subsets


def check_data_reachable(plans: list[BenchmarkPlan], hub: str) -> None:
    """Built-in benchmarks download their data at run time; with no hub, say so now and how to use a local copy."""
    remote = [plan for plan in plans if plan.name not in LOCAL_ONLY and not plan.options.get("local_path")]
    if not remote:
        return
    reason = "HF_HUB_OFFLINE is set" if env.hub_offline() else _unreachable(HUB_HOSTS[hub])
    if reason is None:
        return
    lines = [f"cannot download the data of {', '.join(t for p in remote for t in p.typed)}: no dataset hub "
             f"({reason})."]
    for plan in remote:
        typed = plan.typed[0]
        subsets = plan.options.get("subset_list")
        lines.append(f"Point {typed} at a local copy of its dataset (the hub repository's files, e.g. from "
                     f"`snapshot_download` or `git clone`, in Hugging Face dataset layout"
                     + (f" with subset {', '.join(subsets)}" if subsets else "")
                     + f"): --dataset_args '{{\"{typed}\": {{\"local_path\": \"/path/to/{plan.name}\"}}}}'")
    raise ConfigError("\n".join(lines))


def _unreachable(host: str, timeout: float = 3.0) -> str | None:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as e:
        return f"{host} unreachable: {e.strerror or e}"
