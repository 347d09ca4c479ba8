"""Rows for trl's trainers, tokenized by our templates (never by trl's re-rendering of the chat template).

Each preference method needs the prompt and the answer apart: the answer is the last labelled span of the encoded
conversation (the final assistant turn with its end-of-turn token), the prompt everything before it.

Rows with images, videos or audio (a vision/audio model's template): DPO and KTO rows keep the prompt's processor
outputs beside the ids, under `media_` names (`media_pixel_values`, `media_image_grid_thw`, `media_mm_token_type_ids`
cut to the prompt...); both sides of a pair share them, as they share the prompt. `MediaCollator` hands them to the
model for every sequence trl's collator builds. GRPO prompts keep their media references (`prompt_rows`), which the
rollout encodes with the prompt. The text-only layouts (CPO/ORPO, reward model, GKD) refuse rows with media.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swift.core import ConfigError, preference_ids, split_answer

IGNORE = -100
MEDIA = "media_"  # the prefix of a DPO / KTO row's prompt media columns
PROMPT_MEDIA = "prompt_"  # GRPO rows: `images` -> `prompt_images` (trl would process an `images` column itself)
_NOT_MEDIA = ("input_ids", "labels", "label")


def prompt_media(encoded: dict, prompt_length: int, prefix: str = "") -> dict[str, Any]:
    """The processor outputs of an encoded conversation (`prefix`: its side, `chosen_`) besides its ids, as `media_`
    columns; per-token ones (`mm_token_type_ids`, `token_type_ids`) cut to the prompt. Text models: none."""
    out: dict[str, Any] = {}
    for key, value in encoded.items():
        name = key.removeprefix(prefix)
        if not key.startswith(prefix) or name in _NOT_MEDIA or name.startswith(("chosen_", "rejected_")):
            continue
        out[MEDIA + name] = value[:prompt_length] if _per_token(name) and value is not None else value
    return out


def has_media_inputs(encoded: dict) -> bool:
    """Whether an encoded row carries media (a tensor beside the ids; a text row of a vision model has none)."""
    return any(value is not None and not _per_token(key) for key, value in encoded.items()
               if key.removeprefix("chosen_").removeprefix("rejected_") not in _NOT_MEDIA)


def _per_token(key: str) -> bool:
    return key.endswith("token_type_ids")  # as the template's collator tells them apart


def text_only(encoded: dict) -> dict:
    """`encoded`, refused when it has media (for layouts whose trl trainer takes no pixel inputs)."""
    if has_media_inputs(encoded):
        raise ConfigError("a row has images, videos or audio, which this --rlhf_type's trl trainer cannot take "
                          "(text only); --rlhf_type dpo, kto and grpo train on rows with media")
    return encoded


def preference_row(template: Any, row: dict) -> dict:
    """DPO: prompt_ids / chosen_ids / rejected_ids, plus the prompt's `media_` columns for a vision model."""
    encoded = template.encode(row)
    ids = preference_ids(encoded)
    return ids | prompt_media(encoded, len(ids["prompt_ids"]), "chosen_")


def kto_row(template: Any, row: dict) -> dict:
    """KTO: prompt_ids / completion_ids / label, plus the prompt's `media_` columns for a vision model."""
    if row.get("label") is None:
        raise ConfigError("KTO needs a `label` (true: a desirable answer, false: an undesirable one) on every row")
    encoded = template.encode({k: v for k, v in row.items() if k != "rejected_response"})
    prompt, completion = split_answer(encoded["input_ids"], encoded["labels"])
    return {"prompt_ids": prompt, "completion_ids": completion, "label": bool(row["label"]),
            **prompt_media(encoded, len(prompt))}


def reward_row(template: Any, row: dict) -> dict:
    """Reward models score whole conversations: the chosen and the rejected one, prompt included."""
    return reward_layout(preference_ids(text_only(template.encode(row))))


def reward_layout(ids: dict) -> dict:
    return {"chosen_ids": ids["prompt_ids"] + ids["chosen_ids"], "rejected_ids": ids["prompt_ids"] + ids["rejected_ids"]}


def paired_labels_row(template: Any, row: dict) -> dict:
    """The layout of trl's CPO/ORPO trainers: full chosen/rejected sequences with labels on the answer only."""
    return paired_labels_layout(preference_ids(text_only(template.encode(row))))


def paired_labels_layout(ids: dict) -> dict:
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
    encoded = text_only(template.encode({k: v for k, v in row.items() if k not in ("rejected_response", "label")}))
    prompt, _ = split_answer(encoded["input_ids"], encoded["labels"])
    return {"input_ids": encoded["input_ids"], "labels": encoded["labels"], "prompt_ids": prompt}


# --cached_dataset: the row layout each offline method's rows come from (`swift export --template_mode`): the
# exported rows, then the method's own layout rebuilt from their ids (None: the exported layout is the method's)
EXPORTED_ROWS = {"rlhf": preference_row, "kto": kto_row}  # --template_mode -> the row_fn its rows are encoded by
CACHED_LAYOUTS: dict[Any, tuple[str, Any]] = {  # row_fn: (template_mode, ids -> its layout, None: the exported one)
    preference_row: ("rlhf", None),
    paired_labels_row: ("rlhf", paired_labels_layout),
    reward_row: ("rlhf", reward_layout),
    kto_row: ("kto", None),
}


def from_cached(dataset: Any, layout: Any) -> Any:
    """Cached DPO-layout rows in another pairwise layout (`layout(ids)`); rows with media refused (those methods'
    trl trainers take text only)."""
    if any(name.startswith(MEDIA) for name in dataset.column_names):
        raise ConfigError("--cached_dataset rows have images, videos or audio, which this --rlhf_type's trl trainer "
                          "cannot take (text only); --rlhf_type dpo and kto train on them")
    return dataset.map(lambda row: layout(row) | {"length": row["length"]}, remove_columns=dataset.column_names)


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
    what the policy must produce), with every other column kept for the reward functions (`solution`...). Media
    columns are renamed `prompt_images`, `prompt_videos`, `prompt_audios`: the rollout encodes each prompt with its
    own (trl would otherwise run its processor on an `images` column)."""

    def to_prompt(row: dict) -> dict:
        messages = list(row["messages"])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages:
            raise ConfigError("GRPO needs prompts: a row has no user message")
        return {"prompt": messages}

    rows = rows.map(to_prompt, remove_columns=["messages"])
    renamed = {column: PROMPT_MEDIA + column for column in _media_columns(rows)}
    return rows.rename_columns(renamed) if renamed else rows


def row_tools(row: dict) -> dict[str, Any]:
    """The `tools` of a GRPO prompt row, for the template to render into the prompt (none: {})."""
    return {"tools": row["tools"]} if row.get("tools") else {}


def data_columns(row: dict) -> dict[str, Any]:
    """A GRPO prompt row's columns besides the prompt and its media (`solution`...): what a multi-turn scheduler
    reads as `data_dict`."""
    from swift.core import MEDIA_COLUMNS

    skipped = {"prompt", "tools", *(PROMPT_MEDIA + c for c in MEDIA_COLUMNS.values())}
    return {k: v for k, v in row.items() if k not in skipped}


def media_refs(row: dict) -> dict[str, Any]:
    """The media columns of a GRPO prompt row (`prompt_rows`), under their own names again (`images`...)."""
    from swift.core import MEDIA_COLUMNS as COLUMNS

    return {c: row[PROMPT_MEDIA + c] for c in COLUMNS.values() if row.get(PROMPT_MEDIA + c) is not None}


def _media_columns(rows: Any) -> list[str]:
    from swift.core import MEDIA_COLUMNS as COLUMNS

    names = getattr(rows, "column_names", None)
    if names is None:  # a stream whose features are not known yet: its first row's
        names = list(next(iter(rows), {}))
    return [c for c in COLUMNS.values() if c in names]


def has_media(rows: Any) -> bool:
    """Whether rows reference images, videos or audio: a media column (`images`, `videos`, `audios`) with a
    value (a stream: the column)."""
    from datasets import Dataset

    columns = _media_columns(rows)
    if not isinstance(rows, Dataset):
        return bool(columns)
    return any(any(value for value in rows[column]) for column in columns)


def media_token_ids(config: Any) -> tuple[int, ...]:
    """The model's media placeholder ids (`image_token_id`...): a sampled one would have no features to take."""
    ids = set()
    for name in ("image_token_id", "image_token_index", "video_token_id", "video_token_index", "audio_token_id",
                 "audio_token_index"):
        if isinstance(value := getattr(config, name, None), int):
            ids.add(value)
    return tuple(sorted(ids))


def media_inputs(template: Any, rows: Sequence[dict], width: int, *, prompt_width: int | None = None) -> dict:
    """The model inputs beside the ids of a batch of sequences `width` tokens wide, from each sequence's prompt
    (`{"input_ids": prompt ids, **processor outputs}`), batched by the template's collator: media tensors
    concatenated, per-token keys (`mm_token_type_ids`...) over the prompt and 0 over answer and padding. The prompt
    starts each sequence (right padding: DPO, KTO) or ends at `prompt_width` (left-padded prompts: GRPO)."""
    import torch.nn.functional as F

    left = prompt_width is not None
    encoded = [{"labels": None, **row} for row in rows]  # as the collator takes encoded rows: ids, labels, media
    batch = template.data_collator(encoded, padding_side="left" if left else "right")
    out = {}
    for key, value in batch.items():
        if key in ("input_ids", "labels", "attention_mask", "position_ids"):
            continue
        if _per_token(key):
            n = value.shape[1]
            value = F.pad(value, (prompt_width - n, width - prompt_width) if left else (0, width - n))
        out[key] = value
    return out


class MediaCollator:
    """trl's DPO / KTO collator (`base`, which builds the ids), plus the prompt media of every sequence it builds:
    `copies` sequences per row (DPO 2: the chosen block, then the rejected one), and KTO's mismatched KL sequences,
    which share their row's prompt (`KL_mm_token_type_ids`, `KL_token_type_ids`: trl swaps them in for that forward).
    trl's concatenated forward passes every other key of the batch to the model, the reference model included."""

    def __init__(self, base: Any, template: Any, copies: int) -> None:
        self.base, self.template, self.copies = base, template, copies

    def __call__(self, rows: list[dict]) -> dict:
        import torch.nn.functional as F

        prompts = [{"input_ids": row["prompt_ids"]} | {k.removeprefix(MEDIA): v for k, v in row.items()
                                                       if k.startswith(MEDIA)} for row in rows]
        batch = self.base([{k: v for k, v in row.items() if not k.startswith(MEDIA)} for row in rows])
        media = media_inputs(self.template, prompts * self.copies, batch["input_ids"].shape[1])
        batch.update(media)
        if "KL_input_ids" in batch:
            width = batch["KL_input_ids"].shape[1]
            batch.update({f"KL_{k}": F.pad(v, (0, width - v.shape[1])) for k, v in media.items() if _per_token(k)})
        return batch
