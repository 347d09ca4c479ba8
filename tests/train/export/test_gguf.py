"""GGUF export read back through transformers' GGUF reader: weights, tokenizer, chat template, LoRA, Modelfile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from swift.core import get_model_tokenizer
from swift.train import export_main
from tests.train.export.conftest import logits_of

TRICKY = "Héllo wörld — 123 <|im_start|> <tool_call> ```py\n  x = 1\n```\t\u00a0end"
IDS = torch.tensor([[1, 20, 300, 4000, 5, 77, 1234, 9]])


def _gguf(directory):
    files = list(directory.glob("*.gguf"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def f32_export(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "f32"
    result = export_main(["--model", str(tiny_llama_dir), "--to_gguf", "true", "--gguf_quant", "f32",
                          "--output_dir", str(out)])
    return result


def test_f32_gguf_reads_back_exactly(f32_export, tiny_llama_dir):
    path = _gguf(f32_export.output_dir)
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert (logits_of(back, IDS) - logits_of(original, IDS)).abs().max().item() < 1e-5
    report = json.loads((f32_export.output_dir / "quant_report.json").read_text())
    assert report["next_token_agreement"] == 1.0
    assert report["max_logit_gap"] < 1e-4
    assert report["greedy_same"] == 1.0  # every held-out text's greedy continuation unchanged
    assert report["greedy_tokens_before_divergence"] == report["greedy_tokens"] == 16
    assert report["perplexity_after"] == pytest.approx(report["perplexity_before"], rel=1e-4)
    assert report["gguf_file"] == path.name
    assert report["size_after_bytes"] == path.stat().st_size


def test_tokenizer_and_chat_template_survive(f32_export, smollm2_tokenizer):
    path = _gguf(f32_export.output_dir)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert tok(TRICKY).input_ids == smollm2_tokenizer(TRICKY).input_ids
    assert tok.chat_template.strip() == smollm2_tokenizer.chat_template.strip()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        smollm2_tokenizer.bos_token_id, smollm2_tokenizer.eos_token_id, smollm2_tokenizer.pad_token_id)
    messages = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(messages, tokenize=False) == smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False)


def test_metadata_llama_cpp_needs(f32_export):
    from gguf import GGUFReader

    fields = GGUFReader(_gguf(f32_export.output_dir)).fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt2"  # tiny llama's tokenizer: plain byte-level splitting
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[0] == 3
    assert types[1000] == 1


def test_swift_loader_takes_a_gguf_directory(f32_export, tiny_llama_dir):
    model, tokenizer = get_model_tokenizer(str(f32_export.output_dir))
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert (logits_of(model.eval(), IDS) - logits_of(original, IDS)).abs().max().item() < 1e-5
    assert tokenizer.chat_template


def test_q8_0_is_faithful_and_smaller(tiny_llama_dir, tmp_path, f32_export):
    result = export_main(["--model", str(tiny_llama_dir), "--to_gguf", "true", "--gguf_quant", "q8_0",
                          "--output_dir", str(tmp_path / "q8")])
    report = result.report
    assert report["next_token_agreement"] >= 0.9
    assert 0 < report["max_logit_gap"] < 0.05
    assert report["size_after_bytes"] < 0.4 * f32_export.report["size_after_bytes"]


def test_lora_becomes_one_gguf_equal_to_base_plus_adapter_with_a_modelfile(tiny_lora_dir, tiny_llama_dir, tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    export_main(["--adapters", str(tiny_lora_dir), "--to_gguf", "true", "--gguf_quant", "f32", "--to_ollama", "true",
                 "--output_dir", str(out), "--quant_report", "false"])
    path = _gguf(out)
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tiny_lora_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert (logits_of(back, IDS) - logits_of(tuned, IDS)).abs().max().item() < 1e-5
    assert (logits_of(back, IDS) - logits_of(base, IDS)).abs().max().item() > 1e-3  # the adapter did change it
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.splitlines()[0] == f"FROM ./{path.name}"
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_q_and_k_rows_are_interleaved_the_way_transformers_undoes_them():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from swift.train.export.gguf_export import permute_rows

    weight = np.random.default_rng(0).normal(size=(4 * 16, 12)).astype(np.float32)  # 4 heads of 16
    back = LlamaTensorProcessor()._reverse_permute_weights(permute_rows(weight, 4), 4, 4)
    assert np.array_equal(back, weight)
    assert not np.array_equal(permute_rows(weight, 4), weight)
