"""--check_model: a safetensors file cut short, overwritten, or a shard the index names but the folder lacks, fails
before loading with the file named; a whole model passes, and --check_model false skips the check."""

from __future__ import annotations

import json
import shutil

import pytest

from swift.core.errors import ModelLoadError
from swift.core.model.loader import check_weight_files, get_model_tokenizer


@pytest.fixture
def model_copy(tiny_llama_dir, tmp_path):
    return shutil.copytree(tiny_llama_dir, tmp_path / "model")


def test_a_whole_model_passes(model_copy):
    check_weight_files(model_copy)


def test_a_file_cut_short_is_named(model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: .* bytes where its header says"):
        get_model_tokenizer(str(model_copy))
    with pytest.raises(Exception) as unchecked:  # without the check: whatever the safetensors reader says
        get_model_tokenizer(str(model_copy), check_files=False)
    assert "header says" not in str(unchecked.value)


def test_a_file_that_is_no_safetensors_is_named(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        check_weight_files(model_copy)


def test_a_missing_shard_is_named(model_copy):
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match=r"model-00002-of-00002\.safetensors"):
        check_weight_files(model_copy)
