"""--rope_scaling / --max_model_len: the config the weights load into, and what the rotary embedding then does."""

from __future__ import annotations

import json

import pytest
import torch

from swift.core import ConfigError, load_model
from swift.core.arguments import ModelArgs
from swift.core.model.rope import rope_overrides


def rotary(model, positions: int) -> torch.Tensor:
    emb = model.model.rotary_emb
    x = torch.zeros(1, positions, 8)
    cos, _ = emb(x, torch.arange(positions).unsqueeze(0))
    return cos


def test_a_type_scales_the_original_positions_to_max_model_len(tiny_llama_dir):
    base_config = json.loads((tiny_llama_dir / "config.json").read_text())
    positions = base_config["max_position_embeddings"]
    plain, _ = load_model(ModelArgs(model=str(tiny_llama_dir)))
    scaled, _ = load_model(ModelArgs(model=str(tiny_llama_dir), rope_scaling="yarn", max_model_len=4 * positions))
    params = scaled.config.rope_parameters
    assert (params["rope_type"], params["factor"], params["original_max_position_embeddings"]) == ("yarn", 4.0,
                                                                                                   positions)
    assert params["rope_theta"] == plain.config.rope_parameters["rope_theta"]
    assert scaled.config.max_position_embeddings == 4 * positions
    assert scaled.model.rotary_emb.rope_type == "yarn"
    assert not torch.allclose(rotary(plain, 16), rotary(scaled, 16))  # the positions are encoded differently
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, scaled(ids).logits)
    longer, _ = load_model(ModelArgs(model=str(tiny_llama_dir), max_model_len=2 * positions))
    assert longer.config.max_position_embeddings == 2 * positions
    assert longer.config.rope_parameters["rope_type"] == "default"


def test_json_replaces_the_scaling_and_bad_values_name_the_flag(tiny_llama_dir):
    model, _ = load_model(ModelArgs(model=str(tiny_llama_dir), rope_scaling='{"type": "linear", "factor": 2.0}'))
    assert model.config.rope_parameters["rope_type"] == "linear"
    assert model.config.rope_parameters["factor"] == 2.0
    assert model.model.rotary_emb.rope_type == "linear"
    config = model.config
    with pytest.raises(ConfigError, match="--rope_scaling yarn: give --max_model_len"):
        rope_overrides(config, "yarn", None)
    with pytest.raises(ConfigError, match=r"--max_model_len 16: within the model's \d+ positions"):
        rope_overrides(config, "yarn", 16)
    with pytest.raises(ConfigError, match="not valid JSON"):
        rope_overrides(config, "{factor: 2}", None)
    with pytest.raises(ConfigError, match="rope_type 'wavy' is not one transformers has"):
        rope_overrides(config, '{"rope_type": "wavy"}', None)
    with pytest.raises(ConfigError, match="by name, one of linear, dynamic, yarn, llama3"):
        rope_overrides(config, "longrope", 4096)
    from swift.core import check_rope_flags  # before any model loads: what needs no config

    assert check_rope_flags("yarn", 4096) == []
    assert check_rope_flags('{"rope_type": "linear", "factor": 2}', None) == []
    assert "give --max_model_len" in check_rope_flags("yarn", None)[0]
    assert "not valid JSON" in check_rope_flags("{oops", None)[0]


def test_sft_names_a_rope_flag_problem_before_loading(tiny_llama_dir, tmp_path):
    from swift.train import sft_main

    with pytest.raises(ConfigError, match="--rope_scaling yarn: give --max_model_len"):
        sft_main(["--model", str(tiny_llama_dir), "--dataset", str(tmp_path / "missing.jsonl"), "--rope_scaling",
                  "yarn"])
