"""Tiny llama-family models (the fixture tokenizers' families) and a helper to run the `megatron` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT
from tests.fixtures import DATA

IDENTITY = DATA / "identity.jsonl"


def tiny_config(family: str, vocab_size: int = 256, *, tied: bool = False, layers: int = 4):
    """A few-KB config per family: hidden 64, 4 heads, 2 KV heads (GQA), with each family's own quirks."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, rms_norm_eps=1e-6)
    if family == "llama":
        return LlamaConfig(**common, rope_theta=100000.0)
    if family == "qwen2":
        return Qwen2Config(**common)  # q/k/v biases
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=32)  # q/k norms, head_dim != hidden / heads
    if family == "mistral":
        return MistralConfig(**common, head_dim=24)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(**common, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                              norm_topk_prob=True)
    raise ValueError(family)


def save_tiny(directory: Path, config, tokenizer=None, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_untied_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 4-layer untied llama with SmolLM2's tokenizer: divisible by TP=2 and PP=2."""
    config = tiny_config("llama", len(smollm2_tokenizer), tied=False)
    config.bos_token_id, config.eos_token_id = smollm2_tokenizer.bos_token_id, smollm2_tokenizer.eos_token_id
    return save_tiny(tmp_path_factory.mktemp("tiny-untied"), config, smollm2_tokenizer)


def run_megatron(*argv: str, nproc: int = 1, timeout: int = 300, env_extra: dict | None = None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("NPROC_PER_NODE", None)
    if nproc > 1:
        env.update(NPROC_PER_NODE=str(nproc), MASTER_PORT=str(_free_port()))
    env.update(env_extra or {})
    return subprocess.run([str(BIN / "megatron"), *argv], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_losses(save_dir: Path) -> dict[int, float]:
    out = {}
    for path in save_dir.glob("**/logging.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "loss" in row:
                out[row["step"]] = row["loss"]
    return out


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


__all__ = ["IDENTITY", "check", "logged_losses", "run_megatron", "save_tiny", "sys", "tiny_config"]
