"""Fixtures for export tests: a calibration file, a LoRA adapter on the tiny llama, an export runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Who wrote Hamlet?",
             "Describe a cat.", "What is rain?", "Translate 'hello' to French.", "Count to five.",
             "What is Python?", "Why is the sky blue?", "Give me a word that rhymes with light.", "What is a prime?"]


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"An answer about {q.lower()}"
                                                                                               " in a few plain words."}]}
            for q in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_lora_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """A LoRA adapter with non-zero B (so it changes the model), saved as PEFT saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    directory = tmp_path_factory.mktemp("lora") / "checkpoint-1"
    peft_model.save_pretrained(directory)
    (directory / "args.json").write_text(json.dumps({"model": str(tiny_llama_dir)}))
    return directory


def logits_of(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits[0].float()
