"""The answer scorers (`swift infer --metric`, `--predict_with_generate`) against values worked out by hand
(counts in the comments)."""

from __future__ import annotations

import math

import pytest

from swift.core.metrics import bleu4, rouge_l, rouge_n, score_acc, score_rouge, tokenize


def test_text_splits_into_words_punctuation_and_cjk_characters():
    assert tokenize("Hello, world! 你好世界 it's 3.5") == [
        "Hello", ",", "world", "!", "你", "好", "世", "界", "it", "'", "s", "3", ".", "5"]


@pytest.mark.parametrize(("hypothesis", "reference", "expected"), [
    # unigrams shared: the x2, cat, on, mat = 5 of 6 each side; bigrams: the cat, on the, the mat = 3 of 5;
    # LCS "the cat on the mat" = 5; BLEU: p = 5/6, 3/5, 1/4 (on the mat), 0/3 -> 1/(2*3); same length: no penalty
    ("the cat sat on the mat", "the cat is on the mat",
     (5 / 6, 3 / 5, 5 / 6, (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)),
    # 2 of 2 / 2 of 6 unigrams: F1 = 2 * 1 * (1/3) / (4/3) = 1/2; 1 of 1 / 1 of 5 bigrams: F1 = 1/3;
    # BLEU: p = 1, 1, 0/1 -> 1/2, 0/1 -> 1/4; brevity penalty exp(1 - 6/2)
    ("the cat", "the cat sat on the mat", (1 / 2, 1 / 3, 1 / 2, math.exp(-2) * (1 / 8) ** 0.25)),
    # CJK by character: 我 爱 shared of 4; bigram 我爱 of 3; BLEU p = 2/4, 1/3, 0/2 -> 1/4, 0/1 -> 1/4
    ("我爱北京", "我爱上海", (1 / 2, 1 / 3, 1 / 2, (1 / 2 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25)),
])
def test_rouge_and_bleu_match_hand_counts(hypothesis, reference, expected):
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    assert (rouge_n(hyp, ref, 1), rouge_n(hyp, ref, 2), rouge_l(hyp, ref), bleu4(hyp, ref)) == pytest.approx(expected)


def test_no_shared_word_scores_zero_and_identical_text_scores_one():
    hyp, ref = tokenize("completely different"), tokenize("nothing alike here")
    assert (rouge_n(hyp, ref, 1), rouge_l(hyp, ref), bleu4(hyp, ref)) == (0, 0, 0)
    same = tokenize("a b c d e")
    assert (rouge_n(same, same, 2), rouge_l(same, same), bleu4(same, same)) == pytest.approx((1, 1, 1))


def test_corpus_scores_average_rows_and_skip_empty_ones():
    assert score_acc([(" yes ", "yes"), ("no", "yes")]) == {"acc": 0.5, "rows": 2}
    scores = score_rouge([("the cat", "the cat sat on the mat"), ("a b", "a b"), ("", "skipped")])
    assert scores["rows"] == 2
    assert scores["rouge-1"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert scores["rouge-2"] == pytest.approx(100 * (1 / 3 + 1) / 2)
