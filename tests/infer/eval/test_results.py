"""The printed table and results.json rows."""

from __future__ import annotations

import json

from swift.infer.eval.endpoint import normalize_url
from swift.infer.eval.results import format_table, write_results


def test_table_has_dataset_subset_metric_score_and_n():
    rows = [{"dataset": "general_mcq", "subset": "capitals", "metric": "acc", "score": 0.3, "num": 10}]
    lines = format_table(rows, ["m"]).splitlines()
    assert [c.strip() for c in lines[0].split("|")][:3] == ["dataset", "subset", "metric"]
    assert "score" in lines[0]
    assert lines[2].split() == ["general_mcq", "|", "capitals", "|", "acc", "|", "0.3000", "|", "10"]


def test_models_side_by_side():
    rows = [{"dataset": "d", "subset": "s", "metric": "acc", "score": 0.5, "num": 4, "model": "base"},
            {"dataset": "d", "subset": "s", "metric": "acc", "score": 0.75, "num": 4, "model": "a"}]
    lines = format_table(rows, ["base", "a"]).splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["dataset", "subset", "metric", "base", "a", "n"]
    assert [c.strip() for c in lines[2].split("|")] == ["d", "s", "acc", "0.5000", "0.7500", "4"]


def test_results_json_is_a_list_of_rows(tmp_path):
    rows = [{"dataset": "d", "subset": "s", "metric": "acc", "score": 1.0, "num": 1}]
    write_results(rows, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert not list(tmp_path.glob("*.tmp"))


def test_urls_are_normalised_to_the_v1_base():
    assert normalize_url("http://h:1") == "http://h:1/v1"
    assert normalize_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_url("http://h:1/v1/chat/completions") == "http://h:1/v1"
