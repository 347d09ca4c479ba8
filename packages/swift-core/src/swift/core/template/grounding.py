"""Grounding rows (ms-swift's `objects` column) rendered in each family's own convention.

A row says `<ref-object>` and `<bbox>` in its messages and gives `objects: {"ref": [...], "bbox": [[x1, y1, x2, y2]
or [x, y], ...], "bbox_type": "real" | "norm1", "image_id": [...]}`; refs and boxes replace their tags in order
(independently of each other). Boxes are given in the original image's pixels (`real`, the default) or as 0-1
fractions (`norm1`), and are written the way the model was trained to read them:

| style | ref | box | coordinates |
|---|---|---|---|
| qwen2_vl | `<|object_ref_start|>dog<|object_ref_end|>` | `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` | 0-1000 |
| qwen2_5_vl | `dog` | `[x1, y1, x2, y2]` (JSON) | pixels of the image as the processor resized it |
| qwen3_vl | `dog` | `[x1, y1, x2, y2]` (JSON) | 0-1000 |
| internvl | `<ref>dog</ref>` | `<box>[[x1, y1, x2, y2]]</box>` | 0-1000 |
| default | `dog` | `[(x1,y1),(x2,y2)]` | 0-1000 |

`--norm_bbox norm1000|none` overrides the coordinates of the family's style (ms-swift's flag).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from swift.core.template.errors import TemplateError

Norm = Literal["norm1000", "none"]
REF, BBOX = "<ref-object>", "<bbox>"
_TAGS = re.compile("(<ref-object>|<bbox>)")


def _points(box: Sequence[int]) -> str:
    return ",".join(f"({x},{y})" for x, y in zip(box[::2], box[1::2], strict=True))


@dataclass(frozen=True)
class GroundingStyle:
    ref: Callable[[str], str]
    box: Callable[[list[int]], str]
    norm: Norm


STYLES: dict[str, GroundingStyle] = {
    "qwen2_vl": GroundingStyle(lambda r: f"<|object_ref_start|>{r}<|object_ref_end|>",
                               lambda b: f"<|box_start|>{_points(b)}<|box_end|>", "norm1000"),
    "qwen2_5_vl": GroundingStyle(lambda r: r, json.dumps, "none"),
    "qwen3_vl": GroundingStyle(lambda r: r, json.dumps, "norm1000"),
    "internvl": GroundingStyle(lambda r: f"<ref>{r}</ref>", lambda b: f"<box>[{json.dumps(b)}]</box>", "norm1000"),
    "default": GroundingStyle(lambda r: r, lambda b: f"[{_points(b)}]", "norm1000"),
}


def has_grounding(messages: list[dict]) -> bool:
    return any(REF in _text(m) or BBOX in _text(m) for m in messages)


def render_grounding(messages: list[dict], objects: Any, sizes: Sequence[tuple[int, int]],
                     resized: Sequence[tuple[int, int]], style: str = "default", norm: Norm | None = None) -> None:
    """Replace the tags of `messages` (content-part lists, in place). `sizes`: each image's (width, height) as
    loaded; `resized`: as the processor will feed it to the model (for absolute-pixel styles)."""
    chosen = STYLES.get(style, STYLES["default"])
    norm = norm or chosen.norm
    objects = objects or {}
    refs = list(objects.get("ref") or [])
    boxes = [list(b) for b in objects.get("bbox") or []]
    kind = objects.get("bbox_type") or "real"
    if kind not in ("real", "norm1"):
        raise TemplateError(f"objects.bbox_type {kind!r}: use real (pixels) or norm1 (0-1 fractions)")
    image_ids = list(objects.get("image_id") or [0] * len(boxes))
    if len(image_ids) != len(boxes):
        raise TemplateError(f"objects.image_id has {len(image_ids)} entries for {len(boxes)} boxes")
    counts = {REF: 0, BBOX: 0}

    def replace(match: re.Match) -> str:
        tag = match.group(0)
        index = counts[tag]
        counts[tag] += 1
        if tag == REF:
            if index >= len(refs):
                raise TemplateError(f"the messages have more {REF} tags than objects.ref has names ({len(refs)})")
            return chosen.ref(str(refs[index]))
        if index >= len(boxes):
            raise TemplateError(f"the messages have more {BBOX} tags than objects.bbox has boxes ({len(boxes)})")
        image = image_ids[index]
        if not 0 <= image < max(len(sizes), 1):
            raise TemplateError(f"objects.image_id {image}: the row has {len(sizes)} image(s)")
        return chosen.box(_scale(boxes[index], kind, norm, sizes[image] if sizes else None,
                                 resized[image] if resized else None))

    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    part["text"] = _TAGS.sub(replace, part["text"])
        elif isinstance(content, str):
            message["content"] = _TAGS.sub(replace, content)
    if counts[REF] != len(refs) or counts[BBOX] != len(boxes):
        raise TemplateError(f"objects has {len(refs)} ref(s) and {len(boxes)} bbox(es) but the messages have "
                            f"{counts[REF]} {REF} and {counts[BBOX]} {BBOX} tag(s)")


def _scale(box: list, kind: str, norm: Norm, size: tuple[int, int] | None,
           resized: tuple[int, int] | None) -> list[int]:
    if len(box) not in (2, 4):
        raise TemplateError(f"a bbox is [x, y] or [x1, y1, x2, y2], not {box}")
    if kind == "real" and size is None:
        raise TemplateError("a bbox in pixels (bbox_type real) needs the row's image")
    out = []
    for axis, value in zip((0, 1) * 2, box, strict=False):
        fraction = float(value) if kind == "norm1" else float(value) / size[axis]
        if norm == "norm1000":
            out.append(round(fraction * 1000))
        else:
            out.append(round(fraction * (resized or size)[axis]))
    return out


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
