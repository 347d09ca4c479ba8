"""mcore GPTModel (local spec, one process, gloo) gives HF's logits after conversion, per family; the packaged
SmolLM2 too."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("megatron.core")

from swift.megatron.convert import ModelShape
from tests.megatron.conftest import tiny_config


def mcore_logits(hf_model, ids: torch.Tensor) -> torch.Tensor:
    from swift.megatron.model import Parallel, build_gpt, load_hf_into, transformer_config
    from swift.megatron.parallel import megatron_session

    config, shape, parallel = hf_model.config, ModelShape.from_hf(hf_model.config), Parallel()
    with megatron_session(parallel, seed=0):
        gpt = build_gpt(config, shape, transformer_config(config, shape, parallel, dtype=torch.float32), tp=1)
        load_hf_into(gpt, hf_model.state_dict(), shape, parallel)
        gpt.eval()
        with torch.no_grad():
            positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
            return gpt(input_ids=ids, position_ids=positions, attention_mask=None)


@pytest.mark.parametrize(("family", "tied"), [("llama", True), ("llama", False), ("qwen2", False), ("qwen3", True),
                                              ("mistral", False), ("qwen3_moe", False)])
def test_mcore_logits_match_hf(family, tied):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config(family, tied=tied)).eval()
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        expected = hf(ids).logits
    got = mcore_logits(hf, ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_packaged_smollm2_in_mcore_matches_hf(smollm2_tokenizer):
    from swift.core import get_model_tokenizer

    hf, tokenizer = get_model_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct", "float32", "cpu")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf.eval()(ids).logits
    got = mcore_logits(hf, ids)
    assert (got - expected).abs().max().item() < 5e-4
    assert torch.equal(got[0, -1].argmax(), expected[0, -1].argmax())
