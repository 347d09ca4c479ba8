"""The model registry: families, hub id mapping, duplicates refused, suggestions, user registrations."""

from __future__ import annotations

import pytest

from swift.core import get_model_tokenizer, load_custom_register
from swift.core.errors import ConfigError, DuplicateNameError, UnknownModelError
from swift.core.model import MODELS, ModelId, ModelMeta, find_model_meta, get_model_meta, register_model

FAMILIES = ("qwen2_5", "qwen3", "llama3", "mistral", "gemma", "phi3", "glm4", "deepseek_r1_distill", "internlm2_5",
            "yi", "smollm2")


@pytest.mark.parametrize("model_type", FAMILIES)
def test_required_families_are_registered_with_sizes(model_type):
    meta = get_model_meta(model_type)
    assert len(meta.models) >= 2
    assert meta.architectures
    for model_id in meta.ids:
        assert find_model_meta(model_id) is meta
        assert find_model_meta(model_id.upper()) is meta  # ids are matched case-insensitively


def test_either_hub_id_maps_to_the_chosen_hub():
    meta = find_model_meta("LLM-Research/Llama-3.2-1B-Instruct")
    assert meta.model_type == "llama3"
    assert meta.hub_id("LLM-Research/Llama-3.2-1B-Instruct", modelscope=False) == "meta-llama/Llama-3.2-1B-Instruct"
    assert meta.hub_id("meta-llama/Llama-3.2-1B-Instruct", modelscope=True) == "LLM-Research/Llama-3.2-1B-Instruct"
    qwen = find_model_meta("Qwen/Qwen2.5-7B-Instruct")
    assert qwen.hub_id("Qwen/Qwen2.5-7B-Instruct", modelscope=True) == "Qwen/Qwen2.5-7B-Instruct"


def test_duplicates_are_refused_and_unknown_types_suggest():
    with pytest.raises(DuplicateNameError, match="exists"):
        register_model(ModelMeta("qwen3"))
    with pytest.raises(DuplicateNameError, match="registered under 'qwen3'"):
        register_model(ModelMeta("my_qwen", (ModelId("Qwen/Qwen3-8B"),)))
    with pytest.raises(UnknownModelError, match=r"did you mean \['qwen3'"):
        get_model_meta("qwen_3")


def test_remote_code_is_refused_before_anything_is_downloaded():
    with pytest.raises(ConfigError, match="--trust_remote_code true"):
        get_model_tokenizer("internlm/internlm2_5-7b-chat", load_model=False)


def test_custom_register_path_adds_a_model(tmp_path, tiny_llama_dir):
    plugin = tmp_path / "my_models.py"
    plugin.write_text(
        "from swift.core import register_model, ModelMeta, ModelId\n"
        "register_model(ModelMeta('acme_tiny', (ModelId('acme/tiny-1'),), architectures=('LlamaForCausalLM',)))\n"
    )
    try:
        load_custom_register([str(plugin), str(plugin)])  # the same file twice registers once
        assert get_model_meta("acme_tiny").ids == ("acme/tiny-1",)
        # a directory always loads, with the registered type named explicitly
        _, tokenizer = get_model_tokenizer(str(tiny_llama_dir), load_model=False, model_type="acme_tiny")
        assert tokenizer.swift_model_info.model_type == "acme_tiny"
    finally:
        MODELS.pop("acme_tiny", None)
    with pytest.raises(ConfigError, match="not a python file"):
        load_custom_register([str(tmp_path / "missing.py")])
