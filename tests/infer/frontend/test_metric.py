"""`swift infer --metric` over result lines."""

from __future__ import annotations

from swift.infer.frontend.metric import score_results


def test_result_lines_score_failed_rows_as_wrong_and_skip_rows_without_a_reference():
    lines = [{"response": "x", "labels": "x"}, {"response": None, "labels": "y", "error": "too long"},
             {"response": "z", "labels": None}]
    assert score_results(lines, "acc") == {"acc": 0.5, "rows": 2}
