"""The multiple-choice fallback for replies EvalScope reads as no answer ("A) Tokyo" -> T)."""

from __future__ import annotations

import pytest

from swift.infer.eval.compat import fallback_label

CHOICES = ["Berlin", "Paris", "Madrid", "Rome"]


@pytest.mark.parametrize(("reply", "label"), [
    ("A) Tokyo", "A"), ("B) Paris", "B"), ("(C) Madrid", "C"), ("D. Rome", "D"),
    ("The answer is D) Yellow", "D"), ("The answer is: B) Paris", "B"), ("Paris is the capital of France.", "B"),
    ("Paris or Rome", ""), ("I do not know", ""), ("E) nothing", ""), ("Parisian food", ""),
])
def test_fallback_reads_a_leading_label_or_the_one_option_named(reply, label):
    assert fallback_label(reply, CHOICES) == label


def test_the_patch_is_active_only_inside_its_block():
    pytest.importorskip("evalscope")
    from evalscope.api.benchmark.adapters.multi_choice_adapter import MultiChoiceAdapter

    from swift.infer.eval.compat import mcq_label_fallback

    original = MultiChoiceAdapter.extract_answer
    with mcq_label_fallback():
        assert MultiChoiceAdapter.extract_answer is not original
    assert MultiChoiceAdapter.extract_answer is original
