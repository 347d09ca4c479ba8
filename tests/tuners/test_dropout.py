"""FastDropout: the LoRA dropout swapped in on CPU drops at rate p, rescales, is seeded, and is off in eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swift.tuners.dropout import FastDropout, speed_up_lora_dropout


def test_drops_at_rate_p_and_rescales():
    torch.manual_seed(0)
    dropout = FastDropout(0.1).train()
    x = torch.ones(1000, 1003)  # not a multiple of 4 elements: the last word is cut
    out = dropout(x)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.002)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.9))
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased


def test_seeded_identity_in_eval_and_gradients():
    dropout = FastDropout(0.3).train()
    torch.manual_seed(1)
    a = dropout(torch.ones(64, 64))
    torch.manual_seed(1)
    b = dropout(torch.ones(64, 64))
    assert torch.equal(a, b)
    x = torch.randn(8, 8, requires_grad=True)
    dropout(x).sum().backward()
    kept = x.grad != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7))
    dropout.eval()
    assert dropout(x) is x


def test_autocast_applies_the_mask_in_the_matmul_dtype():
    dropout = FastDropout(0.5).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dropout(torch.ones(16, 16))
    assert out.dtype == torch.bfloat16


def test_lora_dropouts_are_swapped(tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
    before = sum(isinstance(m, nn.Dropout) for m in model.modules())
    assert speed_up_lora_dropout(model) == before == 14  # 7 linears x 2 layers
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == 14
    assert speed_up_lora_dropout(model) == 0  # idempotent
    with pytest.raises(ValueError, match="probability"):
        FastDropout(1.0)


def test_trl_disable_dropout_reaches_the_swapped_dropouts(tiny_llama_dir):
    """trl's trainers (DPO, GRPO, KTO, ...) turn every nn.Dropout off by default; a swapped LoRA dropout that escaped
    that would make the policy's log-probs noisy against the reference's (and differ from trl run directly)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import disable_dropout_in_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=4, lora_dropout=0.5, target_modules="all-linear"))
    speed_up_lora_dropout(model)
    disable_dropout_in_model(model)
    dropouts = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert len(dropouts) == 14
    assert all(m.p == 0 for m in dropouts)
    x = torch.randn(4, 8)
    assert dropouts[0].train()(x) is x
