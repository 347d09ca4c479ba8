"""Shared fixtures: paths of the dev venv, an offline hub, a cache for converted models, tiny random models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import tokenizers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Real tokenizers of six families, kept in tests/fixtures as xz parts and unpacked once into .swift-cache (~0.6 s;
# then a hash of the parts, ~20 ms). Unpacked at import: other conftests list its folders at collection time.
FIXTURES = tokenizers()
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"

# No hub is reachable in development or CI: say so, so that the HF stack fails fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converted packaged models are kept between runs in an ignored folder of the checkout (~520 MB, made once).
os.environ.setdefault("SWIFT_CACHE", str(ROOT / ".swift-cache"))

HEAVY = ("torch", "transformers", "trl", "peft", "deepspeed", "gradio", "vllm", "fastapi", "datasets", "accelerate")


def run_python(code: str, *, env: dict | None = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from swift.core import get_model_tokenizer

    return get_model_tokenizer(SMOLLM2, load_model=False)[1]


def save_tiny_llama(directory: Path, tokenizer, *, layers: int = 2, tied: bool = True,
                    max_positions: int = 512) -> Path:
    """A random llama 64 wide with SmolLM2's tokenizer (seeded: the same weights every time), saved to `directory`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=tied,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer random llama with SmolLM2's config shape family and its real tokenizer, saved to disk."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer)
