"""Rows for trl's trainers, tokenized by our templates (never by trl's re-rendering of the chat template).

Each preference method needs the prompt and the answer apart: the answer is the last labelled span of the encoded
conversation (the final assistant turn with its end-of-turn token), the prompt everything before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swift.core import ConfigError

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
    """prompt_ids / chosen_ids / rejected_ids of a preference row (both sides share the chosen side's prompt)."""
    if "chosen_input_ids" not in encoded:
        raise ConfigError("preference training needs rows with a rejected answer (`rejected_response`, or "
                          "`chosen` + `rejected`); this dataset has plain conversations")
    prompt, chosen = split_answer(encoded["chosen_input_ids"], encoded["chosen_labels"])
    rejected_prompt, rejected = split_answer(encoded["rejected_input_ids"], encoded["rejected_labels"])
    if rejected_prompt != prompt:  # a tokenizer merge at the boundary: cut the rejected side at the shared prefix
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


def preference_row(template: Any, row: dict) -> dict:
    """DPO: prompt_ids / chosen_ids / rejected_ids."""
    return preference_ids(template.encode(row))


def kto_row(template: Any, row: dict) -> dict:
    """KTO: prompt_ids / completion_ids / label."""
    if row.get("label") is None:
        raise ConfigError("KTO needs a `label` (true: a desirable answer, false: an undesirable one) on every row")
    encoded = template.encode({k: v for k, v in row.items() if k != "rejected_response"})
    prompt, completion = split_answer(encoded["input_ids"], encoded["labels"])
    return {"prompt_ids": prompt, "completion_ids": completion, "label": bool(row["label"])}


def reward_row(template: Any, row: dict) -> dict:
    """Reward models score whole conversations: the chosen and the rejected one, prompt included."""
    ids = preference_ids(template.encode(row))
    return {"chosen_ids": ids["prompt_ids"] + ids["chosen_ids"], "rejected_ids": ids["prompt_ids"] + ids["rejected_ids"]}


def paired_labels_row(template: Any, row: dict) -> dict:
    """The layout of trl's CPO/ORPO trainers: full chosen/rejected sequences with labels on the answer only."""
    ids = preference_ids(template.encode(row))
    prompt = ids["prompt_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = ids[f"{side}_ids"]
        out[f"{side}_input_ids"] = prompt + answer
        out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
        out[f"{side}_labels"] = [IGNORE] * len(prompt) + answer
    return out


def distill_row(template: Any, row: dict) -> dict:
    """GKD: the whole conversation (labels on the answers) and the prompt of its last answer."""
    encoded = template.encode({k: v for k, v in row.items() if k not in ("rejected_response", "label")})
    prompt, _ = split_answer(encoded["input_ids"], encoded["labels"])
    return {"input_ids": encoded["input_ids"], "labels": encoded["labels"], "prompt_ids": prompt}


def encoder(row_fn: Any, template: Any) -> Any:
    """`row_fn` bound to the template: picklable, so --dataset_num_proc workers can run it."""
    import functools

    return functools.partial(row_fn, template)


def has_answer(row: dict) -> bool:
    """Rows whose answer survived truncation (a row truncated to its prompt teaches nothing)."""
    for key in ("chosen_ids", "completion_ids", "chosen_labels", "labels"):
        if key in row:
            values = row[key]
            return any(v != IGNORE for v in values) if key.endswith("labels") else len(values) > 0
    return True


class DistillCollator:
    """Batches for trl's GKD trainer: right-padded conversations with labels, left-padded prompts."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        prompt_width = max(len(r["prompt_ids"]) for r in rows)

        def right(values: list[int], fill: int) -> list[int]:
            return values + [fill] * (width - len(values))

        def left(values: list[int], fill: int) -> list[int]:
            return [fill] * (prompt_width - len(values)) + values

        return {
            "input_ids": torch.tensor([right(r["input_ids"], self.pad_id) for r in rows]),
            "attention_mask": torch.tensor([right([1] * len(r["input_ids"]), 0) for r in rows]),
            "labels": torch.tensor([right(r["labels"], IGNORE) for r in rows]),
            "prompts": torch.tensor([left(r["prompt_ids"], self.pad_id) for r in rows]),
            "prompt_attention_mask": torch.tensor([left([1] * len(r["prompt_ids"]), 0) for r in rows]),
        }


def prompt_rows(rows: Any) -> Any:
    """GRPO prompts: the conversation up to its last user/tool turn (an answer in the data is left out, as it is
    what the policy must produce), with every other column kept for the reward functions (`solution`...)."""

    def to_prompt(row: dict) -> dict:
        messages = list(row["messages"])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages:
            raise ConfigError("GRPO needs prompts: a row has no user message")
        return {"prompt": messages}

    return rows.map(to_prompt, remove_columns=["messages"])
