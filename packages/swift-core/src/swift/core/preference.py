"""Preference rows as prompt / chosen / rejected token ids: what every DPO-style trainer takes from the template.

A template encodes a preference row (`messages` + `rejected_response`, or `prompt` / `chosen` / `rejected`) as two
conversations, `chosen_input_ids` / `chosen_labels` and `rejected_input_ids` / `rejected_labels`. The answer of
each is its last labelled span (the final assistant turn with its end-of-turn token), the prompt everything before
it; both sides share the chosen side's prompt. `swift rlhf` (trl's layouts) and `megatron rlhf` read rows this way.
"""

from __future__ import annotations

from collections.abc import Sequence

from swift.core.errors import ConfigError

IGNORE = -100


def split_answer(ids: Sequence[int], labels: Sequence[int]) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the answer is the last run of labelled tokens; tokens after it are dropped."""
    last = next((i for i in range(len(labels) - 1, -1, -1) if labels[i] != IGNORE), None)
    if last is None:
        return list(ids), []
    start = last
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    return list(ids[:start]), list(ids[start:last + 1])


def preference_ids(encoded: dict) -> dict[str, list[int]]:
    """prompt_ids / chosen_ids / rejected_ids of an encoded preference row (both sides share the chosen side's
    prompt; where the tokenizer merged tokens across the prompt's end, the rejected side is cut at the prefix the two
    share)."""
    if "chosen_input_ids" not in encoded:
        raise ConfigError("preference training needs rows with a rejected answer (`rejected_response`, or "
                          "`chosen` + `rejected`); this dataset has plain conversations")
    prompt, chosen = split_answer(encoded["chosen_input_ids"], encoded["chosen_labels"])
    rejected_prompt, rejected = split_answer(encoded["rejected_input_ids"], encoded["rejected_labels"])
    if rejected_prompt != prompt:
        shared = _common_prefix(prompt, encoded["rejected_input_ids"])
        prompt, chosen = prompt[:shared], (prompt[shared:] + chosen)
        rejected = list(encoded["rejected_input_ids"][shared:len(rejected_prompt) + len(rejected)])
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


__all__ = ["preference_ids", "split_answer"]
