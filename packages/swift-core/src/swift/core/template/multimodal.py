"""Rows with images, videos or audio: rendered by the processor's chat template, tokenized by the processor.

The processor is the ground truth, as the tokenizer's chat template is for text: the conversation (media as
`{"type": "image"}` parts, `swift.core.media.media_messages`) is rendered with the chat template, the assistant's
spans are found on that text as for text rows, and the processor tokenizes the text with the loaded media, which
expands each placeholder (`<|image_pad|>`, `<image>`...) to the number of tokens the image takes. The labels found
on the unexpanded tokens are carried over to the expanded ones (placeholders never carry loss), so `input_ids` are
the processor's own `apply_chat_template(..., tokenize=True)` ids token for token.

Besides `input_ids` and `labels`, an encoded row holds what the processor returned for the model: per-token keys
(`mm_token_type_ids`, `token_type_ids`), and media tensors (`pixel_values`, `image_grid_thw`, `input_features`...)
that the collator concatenates over the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from swift.core.media import KINDS, MediaError, loader_for, media_columns, media_messages
from swift.core.template.encode import IGNORE_INDEX
from swift.core.template.errors import TemplateError
from swift.core.template.grounding import has_grounding, render_grounding

# What the processor returns that is not a model input (or that the collator builds itself).
_NOT_INPUTS = ("input_ids", "attention_mask", "labels")
# Processors whose media tensors carry the batch as their first dimension (images per row on the second).
_ROW_BATCHED = {"Idefics2Processor", "Idefics3Processor", "SmolVLMProcessor"}
_PROCESSOR_MEDIA_ARG = {"image": "images", "video": "videos", "audio": "audio"}


class MediaEncoder:
    """The processor side of a template: loads a row's media and runs the processor on rendered text."""

    def __init__(self, processor: Any, *, max_pixels: int | None = None, grounding: str = "default",
                 norm_bbox: str | None = None) -> None:
        self.processor, self.max_pixels = processor, max_pixels
        self.grounding, self.norm_bbox = grounding, norm_bbox
        self.row_batched = type(processor).__name__ in _ROW_BATCHED
        extractor = getattr(processor, "feature_extractor", None)
        self.sampling_rate = getattr(extractor, "sampling_rate", None) or 16000
        tokenizer = processor.tokenizer
        self.bos = getattr(tokenizer, "bos_token", None)
        self.rope_index: Any = None  # set by `bind_model` for M-RoPE models (padding-free positions)
        # Every row of a dataset gets the same keys (datasets stores rows as columns): those the processor names.
        self.input_names = tuple(k for k in getattr(processor, "model_input_names", ()) if k not in _NOT_INPUTS)

    def bind_model(self, model: Any) -> None:
        """Remember the model's 3-D rope index (Qwen2/2.5/3-VL), which padding-free batches need per sequence."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner = getattr(base, "model", base)
        self.rope_index = getattr(inner, "get_rope_index", None)

    def split(self, row: dict, messages: list[dict]) -> tuple[list[dict], dict[str, list]]:
        """Messages as processors' chat templates read them (every content a list of parts: LLaVA's and Idefics'
        templates iterate it even for text turns) and the media references per kind."""
        try:
            messages, refs = media_messages(messages, media_columns(row))
        except MediaError as e:
            raise TemplateError(str(e)) from None
        for message in messages:
            if isinstance(message.get("content"), str):
                message["content"] = [{"type": "text", "text": message["content"]}]
        return messages, refs

    def ground(self, messages: list[dict], objects: Any, media: dict[str, list]) -> None:
        """`<ref-object>` / `<bbox>` tags written in the family's convention (`grounding.py`), in place."""
        if objects is None and not has_grounding(messages):
            return
        if isinstance(objects, str):
            import json

            try:
                objects = json.loads(objects)
            except ValueError as e:
                raise TemplateError(f"'objects' is text but not JSON: {e}") from None
        images = media.get("image", [])
        sizes = [image.size for image in images]
        render_grounding(messages, objects, sizes, [self.resized_size(image) for image in images], self.grounding,
                         self.norm_bbox)

    def resized_size(self, image: Any) -> tuple[int, int]:
        """(width, height) of `image` as the processor feeds it to the model (Qwen-VL's smart resize)."""
        processor = getattr(self.processor, "image_processor", None)
        patch, merge = getattr(processor, "patch_size", None), getattr(processor, "merge_size", None)
        if not patch or not merge:
            return image.size
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        size = dict(getattr(processor, "size", None) or {})
        kwargs = {k: v for k, v in (("min_pixels", size.get("shortest_edge")),
                                    ("max_pixels", size.get("longest_edge"))) if v}
        height, width = smart_resize(image.height, image.width, factor=patch * merge, **kwargs)
        return width, height

    def load(self, refs: dict[str, list]) -> dict[str, list]:
        loaded: dict[str, list] = {}
        for kind in KINDS:
            if not refs.get(kind):
                continue
            load = loader_for(kind)
            try:
                if kind == "audio":
                    loaded[kind] = [load(r, sampling_rate=self.sampling_rate) for r in refs[kind]]
                else:
                    loaded[kind] = [load(r, max_pixels=self.max_pixels) for r in refs[kind]]
            except MediaError as e:
                raise TemplateError(str(e)) from None
        return loaded

    def __call__(self, text: str, media: dict[str, list]) -> dict[str, Any]:
        """The processor's output for one rendered conversation (tensors, batch of one)."""
        kwargs: dict[str, Any] = {}
        for kind, values in media.items():
            if kind == "audio":
                kwargs["audio"] = values
                kwargs["sampling_rate"] = self.sampling_rate
            else:
                kwargs[_PROCESSOR_MEDIA_ARG[kind]] = [values]
        if self.bos is not None and text.startswith(self.bos):
            kwargs["add_special_tokens"] = False  # as the processor's apply_chat_template does
        try:
            return dict(self.processor(text=[text], return_tensors="pt", **kwargs))
        except (ValueError, TypeError, IndexError, RuntimeError) as e:
            raise TemplateError(f"the processor ({type(self.processor).__name__}) refuses this row: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    def model_inputs(self, output: dict[str, Any], length: int) -> dict[str, Any]:
        """The processor's outputs other than ids / mask: per-token keys as lists, media tensors as they are, None
        for the inputs the processor names but this row has not (a text row's pixel_values)."""
        out: dict[str, Any] = {}
        for key in self.input_names:
            out[key] = [0] * length if key.endswith("token_type_ids") else None
        for key, value in output.items():
            if key in _NOT_INPUTS or value is None:
                continue
            if hasattr(value, "shape") and value.ndim == 2 and value.shape[0] == 1 and value.shape[1] == length:
                out[key] = value[0].tolist()
            else:
                out[key] = value
        return out


def expand_labels(ids: Sequence[int], labels: Sequence[int], expanded: Sequence[int]) -> list[int]:
    """Labels of `ids` carried to `expanded` (the same text with media placeholders expanded, maybe a BOS added):
    tokens only `expanded` has get -100. Greedy walk, since expansions are runs of special tokens."""
    out = [IGNORE_INDEX] * len(expanded)
    i = 0
    for j, token in enumerate(expanded):
        if i < len(ids) and ids[i] == token:
            out[j] = labels[i]
            i += 1
    if i != len(ids):
        from swift.core.template.encode import align_labels

        return align_labels(list(ids), list(labels), list(expanded))
    return out


# ---------------------------------------------------------------- batches


def collate_media(rows: Sequence[dict], batch: dict[str, Any], *, padding_free: bool, row_batched: bool,
                  rope_index: Any, padding_side: str = "right") -> dict[str, Any]:
    """Add the rows' processor outputs to a collated batch of ids: per-token keys padded (0) or concatenated like
    `input_ids`, media tensors concatenated over the batch; padding-free Qwen-VL rows get their 3-D M-RoPE
    positions per sequence (`[4, 1, T]`: text positions first, as transformers reads packed M-RoPE rows)."""
    import torch

    keys = sorted({k for row in rows for k in row if k not in ("input_ids", "labels", "length", "position_ids")})
    lengths = [len(row["input_ids"]) for row in rows]
    width = batch["input_ids"].shape[-1]
    for key in keys:
        if _is_per_token(rows, key):
            values = [list(row.get(key) or [0] * n) for row, n in zip(rows, lengths, strict=True)]
            if padding_free:
                batch[key] = torch.tensor([[v for value in values for v in value]], dtype=torch.long)
            else:
                pad = [[0] * (width - len(v)) for v in values]
                batch[key] = torch.tensor([p + v if padding_side == "left" else v + p for v, p in zip(values, pad, strict=True)],
                                          dtype=torch.long)
            continue
        tensors = [_as_tensor(row[key]) for row in rows if row.get(key) is not None]
        if not tensors:
            continue
        if row_batched and key in ("pixel_values", "pixel_attention_mask"):
            batch[key] = _cat_row_batched(tensors, padding_free)
        else:
            batch[key] = torch.cat(tensors, dim=0)
    if padding_free and rope_index is not None and "mm_token_type_ids" in batch:
        batch["position_ids"] = _mrope_positions(rows, batch["position_ids"], rope_index)
    return batch


def collate_packed(rows: Sequence[dict], *, row_batched: bool, rope_index: Any) -> dict[str, Any]:
    """Packed bins (`pack_rows` output, media included) as one padding-free row; Qwen-VL bins get 3-D positions
    per packed sequence."""
    import torch

    batch = {key: torch.tensor([[t for row in rows for t in row[key]]], dtype=torch.long)
             for key in ("input_ids", "labels", "position_ids")}
    segments: list[dict] = []
    for row in rows:
        start = 0
        counts = {key: list(row.get(key + "_counts") or []) for key in ("image_grid_thw", "video_grid_thw")}
        taken = dict.fromkeys(counts, 0)
        for length in row["seq_lengths"]:
            segment: dict[str, Any] = {"input_ids": row["input_ids"][start:start + length]}
            if row.get("mm_token_type_ids") is not None:
                segment["mm_token_type_ids"] = row["mm_token_type_ids"][start:start + length]
            for key, per_sequence in counts.items():
                if per_sequence:
                    n = per_sequence.pop(0)
                    if n:
                        segment[key] = row[key][taken[key]:taken[key] + n]
                    taken[key] += n
            segments.append(segment)
            start += length
    media = [{k: v for k, v in row.items() if k not in _PACKED_NOT_MEDIA and not k.endswith("_counts")} for row in rows]
    batch = collate_media(media, batch, padding_free=True, row_batched=row_batched, rope_index=None)
    if rope_index is not None and "mm_token_type_ids" in batch:
        batch["position_ids"] = _mrope_positions(segments, batch["position_ids"], rope_index)
    return batch


_PACKED_NOT_MEDIA = ("position_ids", "seq_lengths", "length")


def _is_per_token(rows: Sequence[dict], key: str) -> bool:
    for row in rows:
        value = row.get(key)
        if value is None:
            continue
        if hasattr(value, "ndim") and value.ndim != 1:
            return False
        return len(value) == len(row["input_ids"]) and key.endswith("token_type_ids")
    return False


def _as_tensor(value: Any) -> Any:
    import torch

    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def _cat_row_batched(tensors: list[Any], padding_free: bool) -> Any:
    """Idefics-style media: `[1, n_images, ...]` per row; one row of all images padding-free, else padded with
    all-zero images (which those models drop) to the most images per row."""
    import torch

    if padding_free:
        return torch.cat(tensors, dim=1)
    most = max(t.shape[1] for t in tensors)
    padded = [torch.cat([t, t.new_zeros((t.shape[0], most - t.shape[1], *t.shape[2:]))], dim=1) if t.shape[1] < most
              else t for t in tensors]
    return torch.cat(padded, dim=0)


def _mrope_positions(rows: Sequence[dict], text_positions: Any, rope_index: Any) -> Any:
    import torch

    accepted = set(inspect.signature(rope_index).parameters)
    pieces = []
    for row in rows:
        ids = _as_tensor(row["input_ids"]).long()[None]
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        types = row.get("mm_token_type_ids")
        kwargs["mm_token_type_ids"] = _as_tensor([0] * ids.shape[1] if types is None else types).long()[None]
        for key in ("image_grid_thw", "video_grid_thw"):
            if row.get(key) is not None and key in accepted:
                kwargs[key] = _as_tensor(row[key]).long()
        if row.get("second_per_grid_ts") is not None and "second_per_grid_ts" in accepted:
            kwargs["second_per_grid_ts"] = _as_tensor(row["second_per_grid_ts"])
        has_media = kwargs.get("image_grid_thw") is not None or kwargs.get("video_grid_thw") is not None
        if has_media:
            positions, _ = rope_index(**{k: v for k, v in kwargs.items() if k in accepted})
        else:
            positions = torch.arange(ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
        pieces.append(positions.to(torch.long))
    mrope = torch.cat(pieces, dim=-1)  # [3, 1, T]
    return torch.cat([text_positions.view(1, 1, -1), mrope], dim=0)
