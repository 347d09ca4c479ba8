"""Images, videos and audio of multimodal rows: where they are referenced, checked, loaded and resized.

A row refers to media in ms-swift's way (`<image>` / `<video>` / `<audio>` tags in message text, consumed in order
from the `images` / `videos` / `audios` columns) or OpenAI's (`{"type": "image_url", "image_url": {"url": ...}}`,
`{"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}` content parts). `media_messages` turns
either into the content-part messages that processors' chat templates read (`{"type": "image"}` in place of each
reference) plus the list of references per kind, checking that tags and media agree.

A reference is a local path, a `data:` URI (base64), an http(s) URL, a `{"bytes": ..., "path": ...}` object (the
datasets `Image` feature) or an already loaded object (PIL image, numpy array). Nothing heavy is imported at module
level: the dataset loader checks rows with this module before torch loads.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

KINDS = ("image", "video", "audio")
COLUMNS = {"image": "images", "video": "videos", "audio": "audios"}
MEDIA_COLUMNS = COLUMNS  # (its published name: `from swift.core import MEDIA_COLUMNS`)
TAGS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
_TAG = re.compile("(<image>|<video>|<audio>)")
_PART_KINDS = {"image": "image", "image_url": "image", "video": "video", "video_url": "video", "audio": "audio",
               "audio_url": "audio", "input_audio": "audio"}
# The widest aspect ratio vision processors accept (Qwen2-VL's smart_resize refuses more than 200:1).
MAX_ASPECT_RATIO = 200
AUDIO_SAMPLING_RATE = 16000


class MediaError(ValueError):
    """A media reference that cannot be used; `field` names the column or message part at fault (`images[1]`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)  # both in args, so that it pickles across dataset worker processes
        self.field, self.reason = field, reason

    def __str__(self) -> str:
        return f"field {self.field!r}: {self.reason}"


def has_media(row: Mapping[str, Any]) -> bool:
    if any(row.get(column) for column in COLUMNS.values()):
        return True
    return any(isinstance(m.get("content"), list) and any(_part_kind(p) for p in m["content"] if isinstance(p, dict))
               for m in row.get("messages") or () if isinstance(m, dict))


def media_columns(row: Mapping[str, Any]) -> dict[str, list]:
    """`{"image": [...], "video": [...], "audio": [...]}` of the row's columns (a single value becomes a list)."""
    out = {}
    for kind, column in COLUMNS.items():
        value = row.get(column)
        if value is None:
            value = []
        elif isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            value = [value]
        out[kind] = list(value)
    return out


def media_messages(messages: list[dict], columns: Mapping[str, list]) -> tuple[list[dict], dict[str, list]]:
    """Messages with `{"type": kind}` parts where media go, and the references in that order, per kind.

    Tags in text take the column's references in order; OpenAI parts carry their own (or take the next one of the
    column when they carry none). A column with media but no tag anywhere is put before the first user message's
    text (ms-swift does the same). Raises `MediaError` when the tags and the media do not agree.
    """
    used = {kind: 0 for kind in KINDS}
    refs: dict[str, list] = {kind: [] for kind in KINDS}
    tagged = {kind: sum(_count_tags(m.get("content"), kind) for m in messages) for kind in KINDS}
    messages = [dict(m) for m in messages]
    for kind in KINDS:
        if columns.get(kind) and not tagged[kind] and not _has_parts(messages, kind):
            first_user = next((m for m in messages if m.get("role") == "user"), None)
            if first_user is None:
                raise MediaError(COLUMNS[kind], f"the row has {len(columns[kind])} {kind}(s) but no user message "
                                 f"to put them in")
            first_user["content"] = _prepend(first_user.get("content"), TAGS[kind] * len(columns[kind]))

    def take(kind: str, where: str) -> Any:
        column = columns.get(kind) or []
        if used[kind] >= len(column):
            raise MediaError(COLUMNS[kind], f"{where} asks for {kind} {used[kind] + 1} but the row has "
                             f"{len(column)} in {COLUMNS[kind]!r} ({_tag_counts(messages, kind)})")
        used[kind] += 1
        return column[used[kind] - 1]

    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str) and _TAG.search(content):
            parts: list[dict] = []
            for piece in _TAG.split(content):
                kind = next((k for k, tag in TAGS.items() if piece == tag), None)
                if kind is not None:
                    refs[kind].append(take(kind, f"messages[{index}]"))
                    parts.append({"type": kind})
                elif piece:
                    parts.append({"type": "text", "text": piece})
            message["content"] = parts
        elif isinstance(content, list):
            parts = []
            for number, part in enumerate(content):
                kind = _part_kind(part) if isinstance(part, dict) else None
                if kind is None:
                    parts.append(part)
                    continue
                ref = _part_reference(part)
                refs[kind].append(ref if ref is not None else take(kind, f"messages[{index}].content[{number}]"))
                parts.append({"type": kind})
            message["content"] = parts
    for kind in KINDS:
        extra = len(columns.get(kind) or []) - used[kind]
        if extra > 0:
            raise MediaError(COLUMNS[kind], f"the row has {len(columns[kind])} {kind}(s) but the messages have "
                             f"{used[kind]} place(s) for them ({TAGS[kind]} tags or {kind} parts)")
    return messages, refs


def _count_tags(content: Any, kind: str) -> int:
    return content.count(TAGS[kind]) if isinstance(content, str) else 0


def _has_parts(messages: list[dict], kind: str) -> bool:
    return any(isinstance(m.get("content"), list) and any(isinstance(p, dict) and _part_kind(p) == kind
                                                          for p in m["content"]) for m in messages)


def _tag_counts(messages: list[dict], kind: str) -> str:
    return f"{sum(_count_tags(m.get('content'), kind) for m in messages)} {TAGS[kind]} tag(s) in the messages"


def _prepend(content: Any, tags: str) -> Any:
    if isinstance(content, list):
        return [{"type": "text", "text": tags}, *content]
    return tags + (content or "")


def _part_kind(part: Mapping[str, Any]) -> str | None:
    kind = part.get("type")
    if kind in _PART_KINDS:
        return _PART_KINDS[kind]
    return None


def _part_reference(part: Mapping[str, Any]) -> Any:
    kind = part.get("type")
    value = part.get(kind) if kind in part else part.get("url", part.get("path"))
    if isinstance(value, Mapping):
        if kind == "input_audio":  # OpenAI: {"data": base64, "format": "wav" | "mp3"}
            data = value.get("data")
            return f"data:audio/{value.get('format') or 'wav'};base64,{data}" if isinstance(data, str) else None
        return value.get("url", value.get("path")) if ("url" in value or "path" in value) else value
    return value


# ---------------------------------------------------------------- references: checked at load, resolved to files


def resolve_reference(ref: Any, base_dir: Path | None, field: str) -> Any:
    """A local path made absolute (relative to the dataset file's folder, else the working directory) and checked
    to exist; data URIs, URLs and objects unchanged (a `{"bytes"}` object becomes a data URI, so rows stay JSON)."""
    if isinstance(ref, Mapping) and ref.get("bytes") is not None:
        return "data:;base64," + base64.b64encode(bytes(ref["bytes"])).decode()
    if isinstance(ref, Mapping) and isinstance(ref.get("path"), str):
        ref = ref["path"]
    if not isinstance(ref, str):
        if _is_loaded(ref):
            return ref
        raise MediaError(field, f"must be a path, URL or data: URI, got {type(ref).__name__}")
    if ref.startswith(("data:", "http://", "https://")):
        return ref
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [*([base_dir / path] if base_dir else []), Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    where = f" (looked in {base_dir})" if base_dir and not path.is_absolute() else ""
    raise MediaError(field, f"{ref}: no such file{where}")


def check_image(ref: Any, field: str) -> None:
    """Open a local or data: image's header (no decoding): unreadable files and absurd sizes are row errors."""
    if not isinstance(ref, str) or ref.startswith(("http://", "https://")):
        return
    from PIL import Image

    try:
        with Image.open(_open_bytes(ref, field)) as image:
            width, height = image.size
    except Image.DecompressionBombError as e:
        raise MediaError(field, f"{_short(ref)}: {e}") from None
    except (OSError, ValueError) as e:
        raise MediaError(field, f"{_short(ref)}: not a readable image ({e})") from None
    if min(width, height) < 1 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise MediaError(field, f"{_short(ref)}: {width}x{height} has an aspect ratio over {MAX_ASPECT_RATIO}:1, "
                         "which vision processors refuse")


def check_row_media(row: dict, base_dir: Path | None) -> dict:
    """The row with its media references resolved (`resolve_reference`), images' headers read, and its tags
    matched against its media (`media_messages`); raises `MediaError`."""
    columns = media_columns(row)
    for kind, refs in columns.items():
        if not refs:
            continue
        resolved = [resolve_reference(ref, base_dir, f"{COLUMNS[kind]}[{i}]") for i, ref in enumerate(refs)]
        if kind == "image":
            for i, ref in enumerate(resolved):
                check_image(ref, f"images[{i}]")
        row[COLUMNS[kind]] = resolved
    messages = row.get("messages")
    if isinstance(messages, list):
        media_messages(messages, columns)
        _check_objects(row.get("objects"), messages)
        for index, message in enumerate(messages):
            for number, part in enumerate(message.get("content") or () if isinstance(message, dict) else ()):
                if isinstance(part, dict) and _part_kind(part) == "image":
                    ref = _part_reference(part)
                    if isinstance(ref, str) and not ref.startswith(("data:", "http://", "https://")):
                        field = f"messages[{index}].content[{number}]"
                        check_image(resolve_reference(ref, base_dir, field), field)
    return row


def _check_objects(objects: Any, messages: list) -> None:
    """Grounding rows: as many names and boxes in `objects` as `<ref-object>` / `<bbox>` tags in the messages."""
    text = "".join(m["content"] if isinstance(m.get("content"), str) else
                   "".join(p.get("text", "") for p in m.get("content") or () if isinstance(p, dict))
                   for m in messages if isinstance(m, dict))
    tags = {"ref": text.count("<ref-object>"), "bbox": text.count("<bbox>")}
    if objects is None:
        if any(tags.values()):
            raise MediaError("objects", f"the messages have {tags['ref']} <ref-object> and {tags['bbox']} <bbox> "
                             "tag(s) but the row has no 'objects' ({\"ref\": [...], \"bbox\": [...]})")
        return
    if isinstance(objects, str):
        import json

        try:
            objects = json.loads(objects)
        except ValueError as e:
            raise MediaError("objects", f"not JSON: {e}") from None
    if not isinstance(objects, Mapping):
        raise MediaError("objects", f"must be an object with 'ref' and 'bbox', got {type(objects).__name__}")
    for key, tag in (("ref", "<ref-object>"), ("bbox", "<bbox>")):
        given = len(objects.get(key) or [])
        if given != tags[key]:
            raise MediaError(f"objects.{key}", f"{given} given for {tags[key]} {tag} tag(s) in the messages")


# ---------------------------------------------------------------- loading


def load_image(ref: Any, *, max_pixels: int | None = None) -> Any:
    """A PIL RGB image from a reference, scaled down (aspect kept) to at most `max_pixels` pixels when given."""
    from PIL import Image

    image = ref if isinstance(ref, Image.Image) else None
    if image is None:
        if isinstance(ref, Mapping) and ("path" in ref or "url" in ref or "bytes" in ref):
            ref = resolve_reference(ref, None, "image")
        try:
            image = Image.open(_open_bytes(ref, "image"))
            image.load()
        except MediaError:
            raise
        except (OSError, ValueError) as e:
            raise MediaError("image", f"{_short(ref)}: not a readable image ({e})") from None
    image = image.convert("RGB") if image.mode != "RGB" else image
    return fit_pixels(image, max_pixels)


def fit_pixels(image: Any, max_pixels: int | None) -> Any:
    """`image` scaled down so that width x height <= max_pixels (unchanged when it fits or no limit is set)."""
    if not max_pixels or image.width * image.height <= max_pixels:
        return image
    from PIL import Image

    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def load_video(ref: Any, *, max_pixels: int | None = None) -> Any:
    """A video as a list of PIL frames: a list of frame references, a folder of frame images (sorted by name), or
    a video file decoded by transformers' `load_video` (needs a video backend: PyAV, decord, torchcodec)."""
    if isinstance(ref, (list, tuple)):
        return [load_image(frame, max_pixels=max_pixels) for frame in ref]
    if isinstance(ref, str) and Path(ref).is_dir():
        frames = sorted(p for p in Path(ref).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not frames:
            raise MediaError("video", f"{ref}: a folder of frames holds no .png/.jpg/.webp images")
        return [load_image(str(frame), max_pixels=max_pixels) for frame in frames]
    if not isinstance(ref, str):
        return ref  # an already decoded video (array / tensor): the processor takes it as it is
    from transformers.video_utils import load_video as hf_load_video

    try:
        frames, _ = hf_load_video(ref)
    except (ImportError, OSError, ValueError, RuntimeError) as e:
        raise MediaError("video", f"{_short(ref)}: cannot decode ({str(e).splitlines()[0]}); install a video "
                         "backend (pip install av) or give the frames as a list of images") from None
    return frames


def load_audio(ref: Any, *, sampling_rate: int = AUDIO_SAMPLING_RATE) -> Any:
    """Mono float32 samples at `sampling_rate` (read with soundfile, resampled linearly when the file's rate
    differs); a numpy array is taken as already sampled at that rate."""
    import numpy as np

    if not isinstance(ref, (str, Mapping)):
        return np.asarray(ref, dtype=np.float32)
    try:
        import soundfile
    except ImportError:
        from swift.core.errors import MissingBackendError

        raise MissingBackendError("soundfile", extra="swift-core[audio]") from None
    try:
        samples, rate = soundfile.read(_open_bytes(ref, "audio"), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as e:
        raise MediaError("audio", f"{_short(ref)}: not a readable audio file ({e})") from None
    samples = samples.mean(axis=1)
    if rate != sampling_rate and len(samples):
        n = max(1, round(len(samples) * sampling_rate / rate))
        samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples).astype(np.float32)
    return samples


def loader_for(kind: str) -> Callable[..., Any]:
    return {"image": load_image, "video": load_video, "audio": load_audio}[kind]


def _open_bytes(ref: Any, field: str) -> Any:
    """A file path or a binary stream for a reference (data: URIs decoded, URLs fetched)."""
    if isinstance(ref, Mapping):
        ref = resolve_reference(ref, None, field)
    if not isinstance(ref, str):
        raise MediaError(field, f"must be a path, URL or data: URI, got {type(ref).__name__}")
    if ref.startswith("data:"):
        header, _, data = ref.partition(",")
        if ";base64" not in header:
            raise MediaError(field, "a data: URI must be base64 (data:image/png;base64,...)")
        try:
            return io.BytesIO(base64.b64decode(data, validate=False))
        except ValueError as e:
            raise MediaError(field, f"bad base64 in a data: URI ({e})") from None
    if ref.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(ref, timeout=30) as response:
                return io.BytesIO(response.read())
        except OSError as e:
            raise MediaError(field, f"{ref}: cannot download ({e})") from None
    if not Path(ref).is_file():
        raise MediaError(field, f"{ref}: no such file")
    return ref


def _is_loaded(value: Any) -> bool:
    return hasattr(value, "size") and (hasattr(value, "convert") or hasattr(value, "shape"))


def _short(ref: Any) -> str:
    text = ref if isinstance(ref, str) else repr(ref)
    return text if len(text) <= 60 else text[:40] + "..." + text[-12:]
