"""bitsandbytes int8 / nf4 exports reload in transformers, and are saved before any forward pass."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from swift.train import export_main
from swift.train.export.bnb import bnb_config
from tests.train.export.conftest import logits_of

IDS = torch.tensor([[1, 20, 300, 4000, 5, 77, 1234, 9]])


@pytest.mark.parametrize("bits", [8, 4])
def test_bnb_export_reloads_like_a_fresh_quantization(tiny_llama_dir, tmp_path, bits):
    result = export_main(["--model", str(tiny_llama_dir), "--quant_method", "bnb", "--quant_bits", str(bits),
                          "--output_dir", str(tmp_path / "out")])
    config = result.output_dir / "config.json"
    assert ("load_in_8bit" if bits == 8 else "load_in_4bit") in config.read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(result.output_dir, device_map="cpu").eval()
    # bitsandbytes repacks nf4 weights at the first forward on CPUs with AVX512-BF16, and a checkpoint saved after
    # that is corrupt: the export must equal what a fresh quantization of the same weights computes.
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, quantization_config=bnb_config(bits),
                                                 device_map="cpu").eval()
    assert torch.allclose(logits_of(reloaded, IDS), logits_of(fresh, IDS), atol=1e-4)
    assert result.report["format"] == f"bitsandbytes {'int8' if bits == 8 else 'nf4'}"
    assert result.report["next_token_agreement"] > 0.5
