"""Grounding rows (`objects` with <ref-object> / <bbox>) written in each family's convention, with the real
processors of tests/fixtures/multimodal.py: Qwen2-VL's box tokens at 0-1000, Qwen2.5-VL's JSON boxes in the pixels of
the image as its processor resized it, InternVL's <ref>/<box> at 0-1000; bad objects are located row errors."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.multimodal import sample_image, save_tiny


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ground") / "wide.png"
    sample_image(size=100).resize((200, 100)).save(path)  # 200 wide, 100 high
    return str(path)


def grounding_row(image: str, bbox_type: str = "real") -> dict:
    box = [20, 10, 100, 50] if bbox_type == "real" else [0.1, 0.1, 0.5, 0.5]
    return {"messages": [{"role": "user", "content": "<image>Find the <ref-object>."},
                         {"role": "assistant", "content": "<bbox>"}],
            "images": [image], "objects": {"ref": ["cat"], "bbox": [box], "bbox_type": bbox_type}}


def rendered(family: str, row: dict, tmp_path, **template_kwargs) -> tuple[str, dict]:
    from swift.core import get_model_tokenizer
    from swift.core.template import get_template

    _, tokenizer = get_model_tokenizer(str(save_tiny(family, tmp_path / family)), load_model=False)
    encoded = get_template(None, tokenizer, **template_kwargs).encode(row)
    return tokenizer.decode(encoded["input_ids"]), encoded


@pytest.mark.parametrize(("family", "ref", "box"), [
    ("qwen2_vl", "<|object_ref_start|>cat<|object_ref_end|>", "<|box_start|>(100,100),(500,500)<|box_end|>"),
    ("internvl", "<ref>cat</ref>", "<box>[[100, 100, 500, 500]]</box>"),
    ("llava", "Find the cat.", "[(100,100),(500,500)]"),
])
def test_norm1000_families(family, ref, box, image_path, tmp_path):
    for kind in ("real", "norm1"):
        text, _ = rendered(family, grounding_row(image_path, kind), tmp_path / kind)
        assert ref in text
        assert box in text


def test_qwen2_5_vl_boxes_are_pixels_of_the_resized_image(image_path, tmp_path):
    text, encoded = rendered("qwen2_5_vl", grounding_row(image_path), tmp_path)
    _, grid_h, grid_w = encoded["image_grid_thw"][0].tolist()
    assert (grid_w * 14, grid_h * 14) == (56, 28)  # the processor's smart resize of 200 x 100 within 56 x 56 px
    assert "Find the cat." in text
    assert "[6, 3, 28, 14]" in text  # [20, 10, 100, 50] scaled by 56/200 and 28/100
    text, _ = rendered("qwen2_5_vl", grounding_row(image_path), tmp_path / "norm", norm_bbox="norm1000")
    assert "[100, 100, 500, 500]" in text


def test_bad_objects_are_row_errors(image_path, tmp_path):
    from swift.core.dataset import load_dataset
    from swift.core.errors import DatasetRowError

    row = grounding_row(image_path)
    row["objects"]["bbox"].append([1, 2, 3, 4])  # two boxes for one <bbox>
    path = tmp_path / "ground.jsonl"
    path.write_text(json.dumps(grounding_row(image_path)) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DatasetRowError) as caught:
        load_dataset([str(path)])
    assert (caught.value.line, caught.value.field) == (2, "objects.bbox")
