"""`--eval_dataset` / `--dataset_args` planning and the no-hub check (no model, no EvalScope import)."""

from __future__ import annotations

import time

import pytest

from swift.core.errors import ConfigError
from swift.infer.eval.datasets import check_data_reachable, plan_benchmarks


def test_ms_swift_names_map_to_evalscope_benchmarks_and_subsets():
    plans = plan_benchmarks(["ARC_c", "ARC_e", "GSM8K"], None)
    by_name = {p.name: p for p in plans}
    assert set(by_name) == {"arc", "gsm8k"}
    assert by_name["arc"].options["subset_list"] == ["ARC-Challenge", "ARC-Easy"]
    assert by_name["arc"].shown_as == {"ARC-Challenge": "ARC_c", "ARC-Easy": "ARC_e"}


def test_dataset_args_by_the_users_name_reach_the_benchmark(tmp_path):
    plans = plan_benchmarks(["ARC_c"], {"ARC_c": {"local_path": str(tmp_path), "few_shot_num": 0}})
    assert plans[0].options == {"subset_list": ["ARC-Challenge"], "local_path": str(tmp_path), "few_shot_num": 0}


def test_every_problem_is_reported_at_once_with_suggestions(tmp_path):
    with pytest.raises(ConfigError) as info:
        plan_benchmarks(["arcc", "general_mcq", "general_qa"],
                        {"general_qa": {"local_path": str(tmp_path / "nowhere")}, "mmlu": {}})
    message = str(info.value)
    assert "--eval_dataset arcc" in message
    assert "did you mean arc" in message
    assert "general_mcq" in message
    assert "local_path" in message
    assert "nowhere of general_qa does not exist" in message
    assert "'mmlu' is not among --eval_dataset" in message


def test_no_dataset_is_a_flag_error():
    with pytest.raises(ConfigError, match="--eval_dataset"):
        plan_benchmarks([], None)


def test_offline_builtin_benchmark_fails_at_once_naming_dataset_and_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plans = plan_benchmarks(["ARC_c", "gsm8k"], None)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_data_reachable(plans, "modelscope")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "ARC_c" in message
    assert "gsm8k" in message
    assert "\"ARC_c\": {\"local_path\"" in message
    assert "ARC-Challenge" in message


def test_local_copies_need_no_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plans = plan_benchmarks(["ARC_c", "general_mcq"], {"ARC_c": {"local_path": str(tmp_path)},
                                                         "general_mcq": {"local_path": str(tmp_path)}})
    check_data_reachable(plans, "modelscope")  # raises when it would need a hub
    assert {p.name for p in plans} == {"arc", "general_mcq"}
