"""swift_varlen attention: a packed row gives each sequence exactly what it gets alone, with gradients; anything
else (padding, a KV cache) is transformers' sdpa unchanged."""

from __future__ import annotations

import torch

from swift.train.varlen import NAME, use_varlen_attention


def _model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    return model


def test_packed_sequences_attend_only_to_themselves(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    torch.manual_seed(0)
    lengths = [5, 9, 3, 7]
    ids = torch.randint(10, 1000, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    starts = [0, 5, 14, 17]
    alone = torch.cat([model(input_ids=ids[:, s:s + n]).logits for s, n in zip(starts, lengths, strict=True)], 1)
    reference = model(input_ids=ids, position_ids=positions).logits  # sdpa with its block-diagonal mask
    assert use_varlen_attention(model)
    assert model.config._attn_implementation == NAME
    packed = model(input_ids=ids, position_ids=positions, labels=ids)
    assert torch.allclose(packed.logits, alone, atol=1e-5)
    assert torch.allclose(packed.logits, reference, atol=1e-5)
    packed.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_attn_implementation("sdpa")
    model(input_ids=ids, position_ids=positions, labels=ids).loss.backward()
    assert all(torch.allclose(grads[n], p.grad, atol=1e-6) for n, p in model.named_parameters())


def test_padded_batches_and_caches_fall_back_to_sdpa(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    ids = torch.randint(10, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])  # left padding
    reference = model(input_ids=ids, attention_mask=mask).logits
    single = model(input_ids=ids[1:, 2:]).logits
    use_varlen_attention(model)
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, reference, atol=1e-6)
    one_row = model(input_ids=ids[1:], attention_mask=mask[1:]).logits  # B=1, padded, positions never restart
    assert torch.allclose(one_row[:, 2:], single, atol=1e-5)
    model.config.use_cache = True
    generated = model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    model.set_attn_implementation("sdpa")
    assert torch.equal(generated, model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False))


def test_flash_attention_models_are_left_alone(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    model.set_attn_implementation("eager")
    assert not use_varlen_attention(model)
    assert model.config._attn_implementation == "eager"
