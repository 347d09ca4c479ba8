"""Slow: exports of the packaged SmolLM2 (135M): llama.cpp reads our q8_0 GGUF like transformers does; AWQ and GPTQ
keep most next tokens. Run with `pytest -m slow tests/train/export`."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from swift.core import get_model_tokenizer
from swift.train import export_main

pytestmark = pytest.mark.slow
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def q8_gguf(tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "q8"
    result = export_main(["--model", SMOLLM2, "--to_gguf", "true", "--gguf_quant", "q8_0", "--output_dir", str(out)])
    return result


def test_q8_0_keeps_the_packaged_model(q8_gguf):
    assert q8_gguf.report["next_token_agreement"] >= 0.9
    assert q8_gguf.report["max_logit_gap"] < 3


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (it builds llama.cpp from source: ~30 min here)")
def test_llama_cpp_greedy_text_equals_transformers(q8_gguf):
    from llama_cpp import Llama

    gguf = next(q8_gguf.output_dir.glob("*.gguf"))
    # Quantized GGUFs crash at the first decode with AMX weight repacking in llama-cpp-python 0.3.36.
    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False, use_extra_bufts=False)
    model, tokenizer = get_model_tokenizer(str(q8_gguf.output_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    got = llm(prompt, max_tokens=12, temperature=0.0)["choices"][0]["text"]
    assert got.strip() == expected.strip()


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_int4_methods_keep_most_next_tokens(method, tmp_path, calib_file):
    result = export_main(["--model", SMOLLM2, "--quant_method", method, "--group_size", "64",
                          "--dataset", str(calib_file), "--quant_n_samples", "8", "--max_length", "128",
                          "--output_dir", str(tmp_path / method)])
    assert result.report["next_token_agreement"] >= 0.5
    assert result.report["size_after_bytes"] < 0.5 * result.report["size_before_bytes"]
