"""MoE flags by their effect: --router_aux_loss_coef adds the router's load-balancing loss to the training loss
(linearly in the weight), --experts_impl picks how transformers runs the experts (same logits)."""

from __future__ import annotations

import json

import pytest
import torch

from swift.core import ConfigError
from swift.train import sft_main
from tests.train.test_sft import flags, losses


@pytest.fixture(scope="module")
def tiny_moe_dir(tmp_path_factory, smollm2_tokenizer):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                            moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                            max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-moe")
    Qwen3MoeForCausalLM(config).save_pretrained(directory)
    smollm2_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Count to {i}"},
                                                       {"role": "assistant", "content": " ".join(map(str, range(i)))}]})
                              for i in range(3, 11)))
    return path


def test_router_aux_loss_joins_the_loss_in_proportion_to_its_weight(tiny_moe_dir, rows, tmp_path):
    step1 = {}
    for coef in ("0", "0.5", "1.0"):
        run = sft_main(flags(tiny_moe_dir, rows, tmp_path / coef, "--max_steps", "1", "--router_aux_loss_coef", coef,
                             "--lora_dropout", "0"))
        step1[coef] = losses(run.run_dir)[1]
    half, full = step1["0.5"] - step1["0"], step1["1.0"] - step1["0"]
    assert half > 0.1  # the balancing loss of 2-of-4 routing is about num_experts_per_tok (2) at init
    assert full == pytest.approx(2 * half, rel=1e-3)


def test_lora_dropout_on_fused_experts_is_refused_naming_the_flag(tiny_moe_dir, rows, tmp_path):
    with pytest.raises(ConfigError, match=r"--lora_dropout 0\.05: this model's MoE experts are fused weights"):
        sft_main(flags(tiny_moe_dir, rows, tmp_path, "--max_steps", "1"))


def test_router_aux_loss_on_a_dense_model_is_refused(tiny_llama_dir, rows, tmp_path):
    with pytest.raises(ConfigError, match=r"--router_aux_loss_coef 0\.1: LlamaForCausalLM has no MoE router"):
        sft_main(flags(tiny_llama_dir, rows, tmp_path, "--max_steps", "1", "--router_aux_loss_coef", "0.1"))


def test_experts_impl_is_what_transformers_runs(tiny_moe_dir):
    from swift.core import get_model_tokenizer

    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    logits = {}
    for impl in ("eager", "batched_mm"):
        model, _ = get_model_tokenizer(str(tiny_moe_dir), "float32", experts_impl=impl)
        assert model.config._experts_implementation == impl
        with torch.no_grad():
            logits[impl] = model(input_ids=ids).logits
    torch.testing.assert_close(logits["batched_mm"], logits["eager"], rtol=1e-4, atol=1e-4)
