"""bitsandbytes int8 / nf4 exports reload in transformers, and are saved before any forward pass."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from swift.train import export_main
from swift.train.export.bnb import bnb_config
from tests.train.export.conftest import logits_of

IDS = torch.tensor([[1, 20, 300, 4000, 5, 77, 1234, 9]])


@pytest.mark.parametrize(("bits", "flags", "kind", "double"), [
    (8, [], "int8", True), (4, [], "nf4", True),
    (4, ["--bnb_4bit_quant_type", "fp4", "--bnb_4bit_use_double_quant", "false"], "fp4", False)])
def test_bnb_export_reloads_like_a_fresh_quantization(tiny_llama_dir, tmp_path, bits, flags, kind, double):
    result = export_main(["--model", str(tiny_llama_dir), "--quant_method", "bnb", "--quant_bits", str(bits),
                          "--output_dir", str(tmp_path / "out"), *flags])
    config = json.loads((result.output_dir / "config.json").read_text())["quantization_config"]
    assert config["load_in_8bit" if bits == 8 else "load_in_4bit"]
    if bits == 4:
        assert (config["bnb_4bit_quant_type"], config["bnb_4bit_use_double_quant"]) == (kind, double)
    reloaded = AutoModelForCausalLM.from_pretrained(result.output_dir, device_map="cpu").eval()
    # bitsandbytes repacks nf4 weights at the first forward on CPUs with AVX512-BF16, and a checkpoint saved after
    # that is corrupt: the export must equal what a fresh quantization of the same weights computes.
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, quantization_config=bnb_config(bits, kind, double),
                                                 device_map="cpu").eval()
    assert torch.allclose(logits_of(reloaded, IDS), logits_of(fresh, IDS), atol=1e-4)
    assert result.report["format"] == f"bitsandbytes {kind}"
    assert result.report["next_token_agreement"] > 0.5
