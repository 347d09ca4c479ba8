"""Multimodal templates, one family at a time, with real processor classes and chat templates (tests/fixtures/
multimodal.py) on tiny random models: `input_ids` equal the processor's own apply_chat_template ids token for token
(placeholders expanded to its counts), labels only on the assistant's answer, the family detected from config.json,
and the collated batch runs through the model (padding-free equal to padded where the model packs rows)."""

from __future__ import annotations

import pytest

from tests.fixtures.multimodal import FAMILIES, sample_audio, sample_image, save_tiny

AUDIO = {"qwen2_audio"}
# Families whose text model keeps packed rows apart from position_ids alone (transformers builds the block mask).
PACKS = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "internvl", "idefics3", "qwen2_audio"}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return {family: save_tiny(family, tmp_path_factory.mktemp(family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    from swift.core import get_model_tokenizer

    cache = {}

    def load(family):
        if family not in cache:
            cache[family] = get_model_tokenizer(str(tiny_dirs[family]))
        return cache[family]

    return load


def media_row(family, tmp_path, answer="It is red."):
    if family in AUDIO:
        import soundfile

        path = tmp_path / "clip.wav"
        soundfile.write(path, sample_audio(1.0), 16000)
        return {"messages": [{"role": "user", "content": "<audio>What is this?"},
                             {"role": "assistant", "content": answer}], "audios": [str(path)]}
    path = tmp_path / "red.png"
    sample_image((200, 30, 30)).save(path)
    return {"messages": [{"role": "user", "content": "<image>What is this?"},
                         {"role": "assistant", "content": answer}], "images": [str(path)]}


def reference(processor, row, *, with_answer=True):
    """The processor's own ids for the row, through its apply_chat_template with the loaded media."""
    import numpy as np
    from PIL import Image

    kind = "audio" if "audios" in row else "image"
    media = row["audios"][0] if kind == "audio" else Image.open(row["images"][0]).convert("RGB")
    user = [{"type": kind, kind: media if kind == "image" else np.asarray(_read_audio(media))},
            {"type": "text", "text": "What is this?"}]
    messages = [{"role": "user", "content": user}]
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": row["messages"][1]["content"]}]})
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                        add_generation_prompt=not with_answer)
    return out["input_ids"][0].tolist()


def _read_audio(path):
    import soundfile

    samples, _ = soundfile.read(path, dtype="float32")
    return samples


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_equal_the_processor_and_labels_cover_the_answer(family, loaded, tmp_path):
    from swift.core.template import get_template

    _, tokenizer = loaded(family)
    info = tokenizer.swift_model_info
    assert info.processor is not None
    assert info.model_type == {"gemma3": "gemma3_vl"}.get(family, family)  # detected from config.json
    template = get_template(None, tokenizer)
    row = media_row(family, tmp_path)
    encoded = template.encode(row)
    assert encoded["input_ids"] == reference(info.processor, row)
    trained = tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                                if label != -100])
    assert trained.lstrip().startswith("It is red.")  # (a space before it may be part of its first token)
    assert len(trained) < len("It is red.") + 30  # the answer and its end-of-turn, nothing of the prompt
    prompt = template.encode({**row, "messages": row["messages"][:1]})
    assert prompt["input_ids"] == reference(info.processor, row, with_answer=False)
    assert set(prompt["labels"]) == {-100}


@pytest.mark.parametrize("family", FAMILIES)
def test_batches_run_through_the_model(family, loaded, tmp_path):
    import torch

    from swift.core.template import get_template

    model, tokenizer = loaded(family)
    template = get_template(None, tokenizer)
    template.bind_model(model)
    text_row = {"messages": [{"role": "user", "content": "Just text, a little longer than the other row."},
                             {"role": "assistant", "content": "Fine."}]}
    rows = [template.encode(media_row(family, tmp_path)), template.encode(text_row)]
    model.eval()
    padded = template.data_collator(rows, padding_free=False)
    with torch.no_grad():
        out = model(**padded, use_cache=False)
    assert torch.isfinite(out.loss)
    if family not in PACKS:
        return
    flat = template.data_collator(rows, padding_free=True)
    with torch.no_grad():
        logits = model(**flat, use_cache=False).logits[0]
    start = 0
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        mine = padded["attention_mask"][i].bool()
        assert torch.allclose(out.logits[i][mine], logits[start:start + n], atol=1e-4), f"row {i}"
        start += n


def test_text_model_refuses_media_rows(smollm2_tokenizer, tmp_path):
    from swift.core.template import TemplateError, get_template

    with pytest.raises(TemplateError, match="text model"):
        get_template(None, smollm2_tokenizer).encode(media_row("qwen2_vl", tmp_path))


@pytest.fixture(scope="module")
def qwen_224(tmp_path_factory):
    """Qwen2-VL whose processor keeps 224 px images at 224 px (16 x 16 patches)."""
    return save_tiny("qwen2_vl", tmp_path_factory.mktemp("qwen224"), image_size=224)


def big_image_row(tmp_path):
    path = tmp_path / "big.png"
    sample_image(size=224).save(path)
    return {"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "a"}],
            "images": [str(path)]}


def test_max_pixels_scales_images_before_the_processor(qwen_224, tmp_path):
    from swift.core import get_model_tokenizer
    from swift.core.template import get_template

    _, tokenizer = get_model_tokenizer(str(qwen_224), load_model=False)
    row = big_image_row(tmp_path)
    full = get_template(None, tokenizer).encode(row)
    small = get_template(None, tokenizer, max_pixels=56 * 56).encode(row)
    assert int(full["image_grid_thw"].prod()) == 16 * 16  # 224 px, patch 14
    assert int(small["image_grid_thw"].prod()) == 4 * 4
    assert len(small["input_ids"]) < len(full["input_ids"])


def test_max_pixels_environment_bounds_the_qwen_processor(qwen_224, monkeypatch, tmp_path):
    from swift.core import get_model_tokenizer
    from swift.core.template import get_template

    monkeypatch.setenv("MAX_PIXELS", str(56 * 56))
    _, tokenizer = get_model_tokenizer(str(qwen_224), load_model=False)
    assert int(get_template(None, tokenizer).encode(big_image_row(tmp_path))["image_grid_thw"].prod()) == 4 * 4


def test_video_frames_equal_the_processor(loaded, tmp_path):
    """A video given as its frames (paths): Qwen2-VL's video processor sees the same frames as through its own
    apply_chat_template, and padding-free positions are built from video_grid_thw."""
    import torch
    from PIL import Image

    from swift.core.template import get_template

    model, tokenizer = loaded("qwen2_vl")
    frames = []
    for i, colour in enumerate([(200, 30, 30), (30, 180, 40), (30, 40, 200), (10, 10, 10)]):
        sample_image(colour).save(tmp_path / f"frame{i}.png")
        frames.append(str(tmp_path / f"frame{i}.png"))
    row = {"messages": [{"role": "user", "content": "<video>What happens?"},
                        {"role": "assistant", "content": "Colours change."}], "videos": [frames]}
    template = get_template(None, tokenizer)
    template.bind_model(model)
    encoded = template.encode(row)
    processor = tokenizer.swift_model_info.processor
    video = [Image.open(f).convert("RGB") for f in frames]
    reference = processor.apply_chat_template([
        {"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Colours change."}]}],
        tokenize=True, return_dict=True, return_tensors="pt")
    assert encoded["input_ids"] == reference["input_ids"][0].tolist()
    assert torch.equal(encoded["video_grid_thw"], reference["video_grid_thw"])
    flat = template.data_collator([encoded], padding_free=True)
    padded = template.data_collator([encoded], padding_free=False)
    with torch.no_grad():
        assert torch.allclose(model(**flat, use_cache=False).logits, model(**padded, use_cache=False).logits,
                              atol=1e-4)
