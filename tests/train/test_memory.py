"""The two speed defaults of swift.train.memory by their effect: frozen weights stored in bf16 give autocast's own
losses and gradients, and checkpointing turns on exactly when the activations would not fit."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch

from swift.train import memory, sft_main
from tests.conftest import save_tiny_llama
from tests.train.test_sft import flags


def _lora(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model


def _step(model, ids):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize("tied", [False, True])
def test_frozen_weights_in_bf16_give_autocasts_losses_and_gradients(tmp_path, smollm2_tokenizer, tied):
    model_dir = save_tiny_llama(tmp_path / "m", smollm2_tokenizer, tied=tied)
    ids = torch.randint(0, 2000, (2, 24), generator=torch.Generator().manual_seed(1))
    plain = _lora(model_dir)
    cast = copy.deepcopy(plain)
    memory.frozen_weights_in_bf16(cast, bf16=True, sharded=False)
    dtypes = {n: p.dtype for n, p in cast.named_parameters()}
    assert dtypes["base_model.model.model.layers.0.mlp.down_proj.base_layer.weight"] == torch.bfloat16
    assert all(dtype == torch.float32 for n, dtype in dtypes.items() if "lora_" in n or "norm" in n)
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.float32
    head = cast.get_output_embeddings().weight.dtype
    assert head == (torch.float32 if tied else torch.bfloat16)  # a tied head is the embedding: left alone
    loss_a, grads_a = _step(plain, ids)
    loss_b, grads_b = _step(cast, ids)
    assert loss_b == loss_a
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=0)


def test_frozen_weights_stay_fp32_without_bf16_or_adapter_or_sharding(tiny_llama_dir):
    model = _lora(tiny_llama_dir)
    memory.frozen_weights_in_bf16(model, bf16=False, sharded=False)
    memory.frozen_weights_in_bf16(model, bf16=True, sharded=True)
    memory.frozen_weights_in_bf16(model.get_base_model(), bf16=True, sharded=False)  # no peft: trainable set moves
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_checkpointing_turns_on_only_when_activations_exceed_half_the_free_memory(tiny_llama_dir, monkeypatch):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    need = memory.activation_estimate(config, 1000)
    assert need == 1000 * (2 * 64 * memory.ACTIVATION_BYTES_PER_HIDDEN + config.vocab_size * 8)
    monkeypatch.setattr(memory, "free_memory", lambda: 2 * need + 2)
    assert memory.wants_checkpointing(None, config, 1000) is False
    monkeypatch.setattr(memory, "free_memory", lambda: 2 * need - 2)
    assert memory.wants_checkpointing(None, config, 1000) is True
    assert memory.wants_checkpointing(False, config, 1000) is False  # the flag decides when given
    assert memory.free_memory() > 0  # this machine's MemAvailable


def test_sft_checkpoints_by_default_only_when_memory_is_short(tiny_llama_dir, tmp_path, monkeypatch):
    import transformers.modeling_utils as mu

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"},
                                                       {"role": "assistant", "content": f"Hello {i}."}]})
                              for i in range(8)))
    calls = []
    original = mu.checkpoint

    @functools.wraps(original)
    def recording(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(mu, "checkpoint", recording)

    def argv(out):  # --gradient_checkpointing unset: the rule decides
        return _without(flags(tiny_llama_dir, rows, out, "--max_steps", "1"), "--gradient_checkpointing")

    sft_main(argv(tmp_path / "plenty"))
    assert not calls
    monkeypatch.setattr(memory, "free_memory", lambda: 1024)
    sft_main(argv(tmp_path / "short"))
    assert calls


def _without(argv: list[str], flag: str) -> list[str]:
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]
