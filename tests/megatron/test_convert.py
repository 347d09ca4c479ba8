"""HF <-> mcore layout rules on tiny models of every supported family: exact round trips, exact shard/merge."""

from __future__ import annotations

import pytest
import torch

from swift.core.errors import ConfigError
from swift.megatron.convert import ModelShape, Stages, hf_to_mcore, mcore_to_hf, merge, pad_vocab, shard
from tests.megatron.conftest import tiny_config

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "qwen3_moe")
LAYOUTS = ((2, 1, 1), (1, 2, 1), (2, 2, 1), (1, 1, 2), (1, 2, 2), (4, 4, 4))


def _hf_state(family: str, tied: bool = False) -> tuple[dict, ModelShape]:
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, tied=tied)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).state_dict(), ModelShape.from_hf(config)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_to_mcore_to_hf_is_exact(family, tied):
    state, shape = _hf_state(family, tied)
    full = hf_to_mcore(state, shape)
    fused = any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    back = mcore_to_hf(full, shape, fused_experts=fused)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
    assert ("output_layer.weight" in full) is not tied


@pytest.mark.parametrize("family", FAMILIES)
def test_shard_then_merge_is_exact_for_every_layout(family):
    state, shape = _hf_state(family)
    full = hf_to_mcore(state, shape)
    for tp, pp, ep in LAYOUTS:
        if (ep > 1 and not shape.num_experts) or shape.num_kv_heads % tp:
            continue
        pieces = {(t, p, e): shard(full, shape, tp=tp, pp=pp, ep=ep, tp_rank=t, pp_rank=p, ep_rank=e)
                  for t in range(tp) for p in range(pp) for e in range(ep)}
        merged = merge(pieces, shape, tp=tp, pp=pp, ep=ep)
        assert set(merged) == set(full)
        assert all(torch.equal(merged[k], full[k]) for k in full), (tp, pp, ep)


def test_qkv_holds_each_kv_group_q_heads_then_k_then_v():
    """4 heads in 2 KV groups, head_dim 16: rows are [q0 q1 k0 v0 | q2 q3 k1 v1] (16 rows each)."""
    state, shape = _hf_state("llama")
    q, k, v = (state[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    qkv = hf_to_mcore(state, shape)["decoder.layers.0.self_attention.linear_qkv.weight"]
    h = 16
    assert torch.equal(qkv[0:2 * h], q[0:2 * h])
    assert torch.equal(qkv[2 * h:3 * h], k[0:h])
    assert torch.equal(qkv[3 * h:4 * h], v[0:h])
    assert torch.equal(qkv[4 * h:6 * h], q[2 * h:4 * h])
    rank1 = shard(hf_to_mcore(state, shape), shape, tp=2, tp_rank=1)["decoder.layers.0.self_attention.linear_qkv.weight"]
    assert torch.equal(rank1, qkv[4 * h:])  # TP rank 1 holds the second KV group whole


def test_fc1_is_gate_then_up_within_each_tp_shard():
    state, shape = _hf_state("llama")
    gate, up = state["model.layers.1.mlp.gate_proj.weight"], state["model.layers.1.mlp.up_proj.weight"]
    piece = shard(hf_to_mcore(state, shape), shape, tp=2, tp_rank=1)["decoder.layers.1.mlp.linear_fc1.weight"]
    assert torch.equal(piece, torch.cat([gate[48:], up[48:]]))


def test_pipeline_stages_renumber_layers_and_tied_last_stage_gets_the_embedding():
    state, shape = _hf_state("llama", tied=True)
    full = hf_to_mcore(state, shape)
    last = shard(full, shape, pp=2, pp_rank=1)
    first = shard(full, shape, pp=2, pp_rank=0)
    assert torch.equal(last["decoder.layers.0.input_layernorm.weight"], full["decoder.layers.2.input_layernorm.weight"])
    assert "embedding.word_embeddings.weight" in first
    assert "embedding.word_embeddings.weight" not in last
    assert torch.equal(last["output_layer.weight"], full["embedding.word_embeddings.weight"])
    assert "decoder.final_layernorm.weight" in last
    assert "decoder.final_layernorm.weight" not in first


def test_vocab_padding_is_stripped_on_the_way_back():
    state, shape = _hf_state("qwen2")
    padded = pad_vocab(hf_to_mcore(state, shape), 258)
    assert padded["embedding.word_embeddings.weight"].shape[0] == 258
    assert torch.equal(mcore_to_hf(padded, shape)["lm_head.weight"], state["lm_head.weight"])


def test_unsupported_family_and_incomplete_weights_are_named():
    from transformers import GPT2Config

    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        ModelShape.from_hf(GPT2Config())
    state, shape = _hf_state("llama")
    del state["model.layers.2.mlp.up_proj.weight"]
    with pytest.raises(ConfigError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
        hf_to_mcore(state, shape)


def test_uneven_pipeline_stages_shard_and_merge_exactly():
    """--decoder_last_pipeline_num_layers 1 of 4 layers at PP=2: stage 0 holds layers 0-2, stage 1 layer 3."""
    state, shape = _hf_state("llama")
    full = hf_to_mcore(state, shape)
    pieces = {(0, r, 0): shard(full, shape, pp=2, pp_rank=r, stages=Stages(last=1)) for r in range(2)}
    layers = [{int(k.split(".")[2]) for k in piece if k.startswith("decoder.layers.")} for piece in pieces.values()]
    assert layers == [{0, 1, 2}, {0}]
    assert torch.equal(pieces[(0, 1, 0)]["decoder.layers.0.mlp.linear_fc2.weight"],
                       full["decoder.layers.3.mlp.linear_fc2.weight"])
    back = merge(pieces, shape, tp=1, pp=2, stages=Stages(last=1))
    assert set(back) == set(full)
    assert all(torch.equal(back[k], full[k]) for k in full)
