"""Multimodal rows through load_dataset: media paths relative to the dataset file, data: URIs, OpenAI parts, and
located row errors for a missing/unreadable image, a tag count that does not match, an absurd aspect ratio."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from swift.core.dataset import load_dataset
from swift.core.errors import DatasetRowError
from swift.core.media import MediaError, load_audio, load_image, media_messages


def png(path: Path, size=(32, 32), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def data_uri(size=(8, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def row(content: str, images=None, answer: str = "red") -> dict:
    out = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]}
    if images is not None:
        out["images"] = images
    return out


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_relative_paths_resolve_against_the_dataset_file(tmp_path, monkeypatch):
    png(tmp_path / "data" / "img" / "a.png")
    dataset = write(tmp_path / "data" / "train.jsonl", [row("<image>What colour?", ["img/a.png"]),
                                                        row("<image>And this?", [data_uri()])])
    monkeypatch.chdir(tmp_path)  # the working directory is not the file's folder
    train, _ = load_dataset([str(dataset)])
    assert train[0]["images"] == [str((tmp_path / "data" / "img" / "a.png").resolve())]
    assert train[1]["images"][0].startswith("data:image/png;base64,")


@pytest.mark.parametrize(("content", "images", "field", "words"), [
    ("<image>x", ["img/missing.png"], "images[0]", "no such file"),
    ("<image><image>x", ["img/a.png"], "images", "asks for image 2"),
    ("<image>x", ["img/a.png", "img/a.png"], "images", "2 image(s)"),
    ("<image>x", ["img/broken.png"], "images[0]", "not a readable image"),
    ("<image>x", ["img/thin.png"], "images[0]", "aspect ratio"),
])
def test_bad_media_rows_are_located(tmp_path, content, images, field, words):
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "thin.png", size=(1000, 2))
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    dataset = write(tmp_path / "train.jsonl", [row("<image>fine", ["img/a.png"]), row(content, images)])
    with pytest.raises(DatasetRowError) as caught:
        load_dataset([str(dataset)])
    error = caught.value
    assert (error.path, error.line, error.field) == (str(dataset), 2, field)
    assert words in error.reason


def test_bad_media_rows_are_skipped_when_not_strict(tmp_path):
    png(tmp_path / "a.png")
    dataset = write(tmp_path / "train.jsonl", [row("<image>ok", ["a.png"]), row("<image>x", ["gone.png"])])
    train, _ = load_dataset([str(dataset)], strict=False)
    assert len(train) == 1


def test_openai_parts_and_untagged_columns():
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}},
                                             {"type": "text", "text": "what?"}]},
                {"role": "assistant", "content": "a"}]
    parts, refs = media_messages(messages, {"image": []})
    assert parts[0]["content"] == [{"type": "image"}, {"type": "text", "text": "what?"}]
    assert refs["image"] == ["data:,x"]
    # no tag at all: the column's images go before the first user message's text (as ms-swift does)
    parts, refs = media_messages([{"role": "user", "content": "hi"}], {"image": ["a.png", "b.png"]})
    assert parts[0]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "hi"}]
    assert refs["image"] == ["a.png", "b.png"]
    with pytest.raises(MediaError, match="audio 1"):
        media_messages([{"role": "user", "content": "<audio>hi"}], {"audio": []})


def test_load_image_scales_to_max_pixels(tmp_path):
    image = load_image(str(png(tmp_path / "big.png", size=(400, 100))), max_pixels=100 * 100)
    assert image.mode == "RGB"
    assert image.width * image.height <= 100 * 100
    assert abs(image.width / image.height - 4) < 0.1  # aspect kept
    assert load_image(data_uri((8, 8))).size == (8, 8)


def test_load_audio_resamples_to_the_processor_rate(tmp_path):
    import numpy as np
    import soundfile

    samples = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", samples, 8000)
    loaded = load_audio(str(tmp_path / "a.wav"), sampling_rate=16000)
    assert loaded.dtype == np.float32
    assert abs(len(loaded) - 16000) <= 1
    encoded = base64.b64encode((tmp_path / "a.wav").read_bytes()).decode()
    assert len(load_audio(f"data:audio/wav;base64,{encoded}", sampling_rate=8000)) == 8000
