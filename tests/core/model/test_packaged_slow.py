"""The cached conversion gives the same logits as reading the GGUF with transformers directly (slow: ~40 s)."""

from __future__ import annotations

import pytest
import torch

from swift.core import get_model_tokenizer
from swift.core.model.packaged import PACKAGED_MODELS, packaged_file
from tests.conftest import SMOLLM2


@pytest.mark.slow
def test_cached_conversion_has_bit_identical_logits():
    from transformers import AutoModelForCausalLM

    source = packaged_file(PACKAGED_MODELS[SMOLLM2.lower()])
    direct = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype="float32")
    model, tokenizer = get_model_tokenizer(SMOLLM2)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, model(ids).logits)
