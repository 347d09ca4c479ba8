"""What the EvalScope child changes in EvalScope's defaults: English prompts, no silently failing BLEU."""

from __future__ import annotations

import pytest

pytest.importorskip("evalscope", reason='swift eval needs the eval extra: pip install "swift-infer[eval]"')

from evalscope.utils.multi_choices import MultipleChoiceTemplate

from swift.infer.eval.worker import ENGLISH_QA_PROMPT, dataset_args


def plan(name, **options):
    return {"name": name, "options": options, "shown_as": {}}


def test_english_prompts_by_default_and_the_users_choice_wins():
    args = dataset_args([plan("general_mcq", local_path="x"), plan("arc")], "en")
    assert args["general_mcq"]["prompt_template"] == MultipleChoiceTemplate.SINGLE_ANSWER
    assert "prompt_template" not in args["arc"]
    mine = dataset_args([plan("general_mcq", prompt_template="Q: {question}\n{choices}")], "en")
    assert mine["general_mcq"]["prompt_template"] == "Q: {question}\n{choices}"
    multi = dataset_args([plan("general_mcq", extra_params={"multiple_correct": True})], "en")
    assert multi["general_mcq"]["prompt_template"] == MultipleChoiceTemplate.MULTIPLE_ANSWER
    assert "prompt_template" not in dataset_args([plan("general_mcq")], "zh")["general_mcq"]
    assert dataset_args([plan("general_qa")], "en")["general_qa"]["prompt_template"] == ENGLISH_QA_PROMPT


def test_bleu_is_left_out_with_a_warning_when_punkt_tab_is_missing(monkeypatch, tmp_path, caplog):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    args = dataset_args([plan("general_qa")], "en")
    assert args["general_qa"]["metric_list"] == ["Rouge"]
    assert "BLEU left out" in caplog.text
    assert "punkt_tab" in caplog.text
