"""Answers scored against reference answers, as ms-swift reports them: `swift infer --metric acc|rouge` and
`swift sft --predict_with_generate` (ROUGE / BLEU of the generated validation answers).

acc is the share of exact matches (both sides stripped). rouge is ms-swift's `compute_rouge_bleu`: ROUGE-1, ROUGE-2
and ROUGE-L F1 and BLEU-4 (NLTK's `sentence_bleu`, smoothing method 3), averaged over the rows, times 100. Texts are
split into words, punctuation marks and, for Chinese / Japanese / Korean, single characters (ms-swift segments
Chinese words with jieba; characters need no dictionary and make no new dependency). A row whose answer or reference
has no tokens is left out of rouge, as ms-swift does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

# CJK ideographs, kana, hangul and fullwidth forms: one token per character
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}\W]+|[^\s\w]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Words (runs of letters and digits), punctuation marks and CJK characters, in order."""
    return _TOKEN.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: float, hypothesis_size: int, reference_size: int) -> float:
    if not overlap or not hypothesis_size or not reference_size:
        return 0.0
    precision, recall = overlap / hypothesis_size, overlap / reference_size
    return 2 * precision * recall / (precision + recall)


def rouge_n(hypothesis: Sequence[str], reference: Sequence[str], n: int) -> float:
    """ROUGE-N F1: n-grams shared (each counted as often as both sides have it) over each side's n-grams."""
    hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
    return _f1(sum((hyp & ref).values()), sum(hyp.values()), sum(ref.values()))


def rouge_l(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1: the longest common subsequence over each side's length."""
    previous = [0] * (len(reference) + 1)
    for token in hypothesis:  # one row of the LCS table at a time
        row = [0]
        for j, other in enumerate(reference):
            row.append(previous[j] + 1 if token == other else max(previous[j + 1], row[j]))
        previous = row
    return _f1(previous[-1], len(hypothesis), len(reference))


def bleu4(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Sentence BLEU-4 with one reference, NLTK's `sentence_bleu(..., SmoothingFunction().method3)`: an n-gram
    order without a match counts 1 / (2^k * its n-gram count), k = 1, 2, ... for each such order."""
    precisions = []
    for n in range(1, 5):
        hyp = _ngrams(hypothesis, n)
        matches, total = sum((hyp & _ngrams(reference, n)).values()), max(1, sum(hyp.values()))
        if n == 1 and matches == 0:
            return 0.0  # NLTK: no unigram in common scores 0, before any smoothing
        precisions.append((matches, total))
    logs, missing = [], 0
    for matches, total in precisions:
        if matches == 0:
            missing += 1
            logs.append(-math.log(2 ** missing * total))
        else:
            logs.append(math.log(matches / total))
    c, r = len(hypothesis), len(reference)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(sum(logs) / 4)


def score_acc(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    pairs = list(pairs)
    hits = sum(answer.strip() == reference.strip() for answer, reference in pairs)
    return {"acc": hits / len(pairs) if pairs else 0.0, "rows": len(pairs)}


def score_rouge(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    totals = dict.fromkeys(("rouge-1", "rouge-2", "rouge-l", "bleu-4"), 0.0)
    count = 0
    for answer, reference in pairs:
        hypothesis, ref = tokenize(answer), tokenize(reference)
        if not hypothesis or not ref:
            continue
        count += 1
        totals["rouge-1"] += rouge_n(hypothesis, ref, 1)
        totals["rouge-2"] += rouge_n(hypothesis, ref, 2)
        totals["rouge-l"] += rouge_l(hypothesis, ref)
        totals["bleu-4"] += bleu4(hypothesis, ref)
    return {**{k: round(100 * v / count, 6) if count else 0.0 for k, v in totals.items()}, "rows": count}


# --metric NAME -> scorer of (answer, reference) pairs; the flag's choices are these keys
METRICS: dict[str, Callable[[Iterable[tuple[str, str]]], dict[str, float]]] = {
    "acc": score_acc,
    "rouge": score_rouge,
}
