"""HF <-> mcore weights for the llama family (Llama, Qwen2/2.5/3 dense and MoE, Mistral, SmolLM2).

Pure functions on state dicts, so every layout rule is testable without a process group:

- `hf_to_mcore` / `mcore_to_hf`: a whole HF model <-> a whole (TP=1, PP=1, EP=1) mcore GPTModel, local layer spec.
- `shard` / `merge`: a whole mcore state dict <-> the piece one (tp, pp, ep) rank holds.

Layout facts (megatron-core 0.16, local spec): `linear_qkv` holds, per KV group, [the group's q heads; k; v];
`linear_fc1` is [gate; up] within each TP shard; embedding, output layer and qkv split on dim 0, `linear_proj`
and `linear_fc2` on dim 1; norms are replicated; MoE experts are split over EP ranks by index, not over TP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from swift.core import ConfigError

SUPPORTED_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "qwen3_moe")
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ModelShape:
    """What the conversion needs from an HF config."""

    family: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    tied: bool
    qkv_bias: bool
    qk_norm: bool
    num_experts: int = 0
    moe_ffn_hidden_size: int = 0
    moe_topk: int = 0
    # labels of a sequence-classification head (`--task_type seq_cls|reranker`) in place of the LM head: mcore's
    # `output_layer.weight` [head, hidden] is HF's `score.weight`, whole on every TP rank; 0: the LM head
    head: int = 0

    @classmethod
    def from_hf(cls, config: Any) -> ModelShape:
        family = getattr(config, "model_type", None)
        if family not in SUPPORTED_FAMILIES:
            raise ConfigError(f"--model: model_type {family!r} has no mcore mapping; supported families: "
                              f"{', '.join(SUPPORTED_FAMILIES)} (SmolLM2 is llama)")
        heads = config.num_attention_heads
        experts = int(getattr(config, "num_experts", 0) or 0) if family == "qwen3_moe" else 0
        if experts and getattr(config, "mlp_only_layers", None):
            raise ConfigError("--model: Qwen3-MoE with mlp_only_layers (dense layers between MoE ones) has no mapping")
        if experts and getattr(config, "decoder_sparse_step", 1) != 1:
            raise ConfigError("--model: Qwen3-MoE with decoder_sparse_step != 1 has no mapping")
        head = int(config.num_labels) if any(a.endswith("ForSequenceClassification")
                                             for a in getattr(config, "architectures", None) or []) else 0
        return cls(
            head=head,
            family=family, num_layers=config.num_hidden_layers, hidden_size=config.hidden_size, num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            ffn_hidden_size=config.intermediate_size, vocab_size=config.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)) and not head,
            qkv_bias=bool(getattr(config, "attention_bias", family == "qwen2")) or family == "qwen2",
            qk_norm=family in ("qwen3", "qwen3_moe"), num_experts=experts,
            moe_ffn_hidden_size=int(getattr(config, "moe_intermediate_size", 0) or 0) if experts else 0,
            moe_topk=int(getattr(config, "num_experts_per_tok", 0) or 0) if experts else 0)


# --- whole model: HF <-> mcore -------------------------------------------------------------------------------------

def _qkv_to_mcore(q, k, v, shape: ModelShape):
    """[q; k; v] in HF's separate tensors -> mcore's per-group interleave (weights [out, in] or biases [out])."""
    import torch

    groups, per_group = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads
    tail = q.shape[1:]
    q = q.reshape(groups, per_group * shape.head_dim, *tail)
    k = k.reshape(groups, shape.head_dim, *tail)
    v = v.reshape(groups, shape.head_dim, *tail)
    return torch.cat([q, k, v], dim=1).reshape(-1, *tail).contiguous()


def _qkv_to_hf(qkv, shape: ModelShape):
    groups, per_group = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads
    tail = qkv.shape[1:]
    grouped = qkv.reshape(groups, (per_group + 2) * shape.head_dim, *tail)
    q, k, v = grouped.split([per_group * shape.head_dim, shape.head_dim, shape.head_dim], dim=1)
    return (q.reshape(-1, *tail).contiguous(), k.reshape(-1, *tail).contiguous(), v.reshape(-1, *tail).contiguous())


def _layer_to_mcore(get, shape: ModelShape) -> dict:
    """One decoder layer; `get(name)` reads `model.layers.<i>.<name>` from the HF state dict."""
    import torch

    out = {"input_layernorm.weight": get("input_layernorm.weight"),
           "pre_mlp_layernorm.weight": get("post_attention_layernorm.weight"),
           "self_attention.linear_proj.weight": get("self_attn.o_proj.weight")}
    attn = "self_attn."
    out["self_attention.linear_qkv.weight"] = _qkv_to_mcore(
        get(attn + "q_proj.weight"), get(attn + "k_proj.weight"), get(attn + "v_proj.weight"), shape)
    if shape.qkv_bias:
        out["self_attention.linear_qkv.bias"] = _qkv_to_mcore(
            get(attn + "q_proj.bias"), get(attn + "k_proj.bias"), get(attn + "v_proj.bias"), shape)
    if shape.qk_norm:
        out["self_attention.q_layernorm.weight"] = get(attn + "q_norm.weight")
        out["self_attention.k_layernorm.weight"] = get(attn + "k_norm.weight")
    if shape.num_experts:
        out["mlp.router.weight"] = get("mlp.gate.weight")
        for e in range(shape.num_experts):
            prefix = f"mlp.experts.{e}."
            out[f"mlp.experts.local_experts.{e}.linear_fc1.weight"] = torch.cat(
                [get(prefix + "gate_proj.weight"), get(prefix + "up_proj.weight")])
            out[f"mlp.experts.local_experts.{e}.linear_fc2.weight"] = get(prefix + "down_proj.weight")
    else:
        out["mlp.linear_fc1.weight"] = torch.cat([get("mlp.gate_proj.weight"), get("mlp.up_proj.weight")])
        out["mlp.linear_fc2.weight"] = get("mlp.down_proj.weight")
    return out


def hf_to_mcore(hf: dict, shape: ModelShape) -> dict:
    """A whole HF llama-family state dict -> the whole mcore GPTModel state dict (TP=PP=EP=1)."""
    hf = _experts_per_index(hf, shape)
    missing = []

    def getter(prefix: str):
        def get(name: str):
            key = prefix + name
            if key not in hf:
                missing.append(key)
                return None
            return hf[key]
        return get

    out = {"embedding.word_embeddings.weight": hf.get("model.embed_tokens.weight"),
           "decoder.final_layernorm.weight": hf.get("model.norm.weight")}
    if shape.head:
        out["output_layer.weight"] = hf.get("score.weight")
    elif not shape.tied:
        out["output_layer.weight"] = hf.get("lm_head.weight")
    if any(v is None for v in out.values()):
        missing += [k for k, v in out.items() if v is None]
    for i in range(shape.num_layers):
        try:
            layer = _layer_to_mcore(getter(f"model.layers.{i}."), shape)
        except (TypeError, AttributeError, RuntimeError):
            layer = {}
        out.update({f"decoder.layers.{i}.{k}": v for k, v in layer.items()})
    if missing:
        raise ConfigError(f"the HF weights lack {len(missing)} tensor(s) the {shape.family} mapping needs, "
                          f"e.g. {missing[:3]}")
    return out


def _experts_per_index(hf: dict, shape: ModelShape) -> dict:
    """transformers 5 stores Qwen3-MoE experts fused (`mlp.experts.gate_up_proj` [E, 2F, H], `down_proj`
    [E, H, F]); older releases per expert. Give the per-expert names either way."""
    if not shape.num_experts or not any(k.endswith("mlp.experts.gate_up_proj") for k in hf):
        return hf
    out = {}
    for key, value in hf.items():
        if key.endswith("mlp.experts.gate_up_proj"):
            base = key[: -len("gate_up_proj")]
            for e in range(shape.num_experts):
                gate, up = value[e].chunk(2, dim=0)
                out[f"{base}{e}.gate_proj.weight"], out[f"{base}{e}.up_proj.weight"] = gate, up
        elif key.endswith("mlp.experts.down_proj"):
            base = key[: -len("down_proj")]
            for e in range(shape.num_experts):
                out[f"{base}{e}.down_proj.weight"] = value[e]
        else:
            out[key] = value
    return out


def mcore_to_hf(mcore: dict, shape: ModelShape, *, fused_experts: bool = False) -> dict:
    """The whole mcore state dict -> HF names (the inverse of `hf_to_mcore`; `_extra_state` keys are dropped)."""
    import torch

    vocab = shape.vocab_size  # rows past it are TP padding (see `pad_vocab`)
    out = {"model.embed_tokens.weight": mcore["embedding.word_embeddings.weight"][:vocab],
           "model.norm.weight": mcore["decoder.final_layernorm.weight"]}
    if shape.head:
        out["score.weight"] = mcore["output_layer.weight"]
    else:
        out["lm_head.weight"] = (mcore["embedding.word_embeddings.weight"] if shape.tied
                                 else mcore["output_layer.weight"])[:vocab]
    for i in range(shape.num_layers):
        m = {k[len(f"decoder.layers.{i}."):]: v for k, v in mcore.items() if k.startswith(f"decoder.layers.{i}.")}
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = m["input_layernorm.weight"]
        out[p + "post_attention_layernorm.weight"] = m["pre_mlp_layernorm.weight"]
        out[p + "self_attn.o_proj.weight"] = m["self_attention.linear_proj.weight"]
        q, k, v = _qkv_to_hf(m["self_attention.linear_qkv.weight"], shape)
        out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"], out[p + "self_attn.v_proj.weight"] = (
            q, k, v)
        if shape.qkv_bias:
            q, k, v = _qkv_to_hf(m["self_attention.linear_qkv.bias"], shape)
            out[p + "self_attn.q_proj.bias"], out[p + "self_attn.k_proj.bias"], out[p + "self_attn.v_proj.bias"] = (
                q, k, v)
        if shape.qk_norm:
            out[p + "self_attn.q_norm.weight"] = m["self_attention.q_layernorm.weight"]
            out[p + "self_attn.k_norm.weight"] = m["self_attention.k_layernorm.weight"]
        if shape.num_experts:
            out[p + "mlp.gate.weight"] = m["mlp.router.weight"]
            gates, ups, downs = [], [], []
            for e in range(shape.num_experts):
                gate, up = m[f"mlp.experts.local_experts.{e}.linear_fc1.weight"].chunk(2, dim=0)
                gates.append(gate)
                ups.append(up)
                downs.append(m[f"mlp.experts.local_experts.{e}.linear_fc2.weight"])
            if fused_experts:
                out[p + "mlp.experts.gate_up_proj"] = torch.stack(
                    [torch.cat([g, u]) for g, u in zip(gates, ups, strict=True)])
                out[p + "mlp.experts.down_proj"] = torch.stack(downs)
            else:
                for e in range(shape.num_experts):
                    out[p + f"mlp.experts.{e}.gate_proj.weight"] = gates[e]
                    out[p + f"mlp.experts.{e}.up_proj.weight"] = ups[e]
                    out[p + f"mlp.experts.{e}.down_proj.weight"] = downs[e]
        else:
            gate, up = m["mlp.linear_fc1.weight"].chunk(2, dim=0)
            out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
            out[p + "mlp.down_proj.weight"] = m["mlp.linear_fc2.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def padded_vocab_size(vocab_size: int, tp: int) -> int:
    """mcore splits the vocabulary evenly over TP ranks: the next multiple of `tp`."""
    return -(-vocab_size // tp) * tp


def pad_vocab(full: dict, padded: int, *, head: bool = False) -> dict:
    """Zero rows appended to the embedding and output layer up to `padded` rows (a no-op when none are needed).
    As in Megatron-LM, padded ids get logit 0, which enters the softmax: pick TP sizes dividing the vocabulary
    for losses identical to HF's. `head`: the output layer is a classification head, not over the vocabulary."""
    import torch

    out = dict(full)
    for name in ("embedding.word_embeddings.weight", *(() if head else ("output_layer.weight",))):
        if name in out and out[name].shape[0] < padded:
            weight = out[name]
            out[name] = torch.cat([weight, weight.new_zeros(padded - weight.shape[0], *weight.shape[1:])])
    return out


# --- parallel pieces: whole mcore <-> one rank's shard ----------------------------------------------------------------

def split_rule(name: str) -> str:
    """How a parameter (mcore name, LoRA names included) is split over TP ranks: 'rows', 'cols', 'fc1' or 'none'."""
    if name.endswith("_extra_state"):
        return "none"
    if "local_experts" in name:
        return "none"  # experts are split over EP, not TP (expert_tensor_parallel_size = 1)
    is_lora_a, is_lora_b = ".lora_A." in name, ".lora_B." in name
    if "linear_fc1" in name:
        return "none" if is_lora_a else "fc1"
    if "linear_qkv" in name:
        return "none" if is_lora_a else "rows"
    if "linear_proj" in name or "linear_fc2" in name:
        if is_lora_b or name.endswith(".bias"):
            return "none"
        return "cols"
    if name.startswith(("embedding.word_embeddings.", "output_layer.")):
        return "rows"
    return "none"


@dataclass(frozen=True)
class Stages:
    """How the decoder layers split over pipeline stages: evenly, or `first` layers on the first stage and/or
    `last` on the last one with the rest split evenly over the others (mcore's num_layers_in_first_pipeline_stage /
    num_layers_in_last_pipeline_stage; --decoder_first/last_pipeline_num_layers)."""

    first: int | None = None
    last: int | None = None

    @classmethod
    def from_meta(cls, meta: dict) -> Stages:
        return cls(meta.get("first_stage_layers"), meta.get("last_stage_layers"))

    def to_meta(self) -> dict:
        return {"first_stage_layers": self.first, "last_stage_layers": self.last}

    def sizes(self, num_layers: int, pp: int) -> list[int]:
        """Layers per stage; ConfigError naming the flags when they cannot split `num_layers` over `pp` stages."""
        if pp == 1 or (self.first is None and self.last is None):
            if num_layers % pp:
                raise ConfigError(f"--pipeline_model_parallel_size {pp} must divide the layers ({num_layers})")
            return [num_layers // pp] * pp
        fixed = {stage: n for stage, n in ((0, self.first), (pp - 1, self.last)) if n is not None}
        flags = " and ".join(f"--decoder_{which}_pipeline_num_layers {n}" for which, n in
                             (("first", self.first), ("last", self.last)) if n is not None)
        rest, remaining = pp - len(fixed), num_layers - sum(fixed.values())
        even = remaining == 0 if rest == 0 else remaining >= rest and remaining % rest == 0
        if not even or any(n < 1 for n in fixed.values()):
            raise ConfigError(f"{flags}: the other {rest} stage(s) must split the remaining {remaining} of "
                              f"{num_layers} layers evenly, at least one each")
        return [fixed.get(stage, remaining // max(rest, 1)) for stage in range(pp)]

    def layers(self, num_layers: int, pp: int, pp_rank: int) -> range:
        """The global layer numbers of pipeline stage `pp_rank`."""
        sizes = self.sizes(num_layers, pp)
        start = sum(sizes[:pp_rank])
        return range(start, start + sizes[pp_rank])


def _on_stage(name: str, shape: ModelShape, pp: int, pp_rank: int) -> bool:
    if name.startswith("embedding."):
        return pp_rank == 0
    if name.startswith(("output_layer.", "decoder.final_layernorm.")):
        return pp_rank == pp - 1
    return True


def _rule(name: str, shape: ModelShape) -> str:
    return "none" if shape.head and name.startswith("output_layer.") else split_rule(name)


def _tp_piece(name: str, tensor, tp: int, tp_rank: int, rule: str | None = None):
    import torch

    rule = rule or split_rule(name)
    if tp == 1 or rule == "none":
        return tensor
    if rule == "rows":
        return tensor.chunk(tp, dim=0)[tp_rank].clone()
    if rule == "cols":
        return tensor.chunk(tp, dim=1)[tp_rank].clone()
    gate, up = tensor.chunk(2, dim=0)  # fc1: [gate; up] inside every shard
    return torch.cat([gate.chunk(tp, dim=0)[tp_rank], up.chunk(tp, dim=0)[tp_rank]])


def shard(full: dict, shape: ModelShape, *, tp: int = 1, pp: int = 1, ep: int = 1, tp_rank: int = 0,
          pp_rank: int = 0, ep_rank: int = 0, stages: Stages = Stages()) -> dict:
    """The part of a whole mcore state dict that rank (tp_rank, pp_rank, ep_rank) holds, with stage-local layer
    numbers and EP-local expert numbers. With tied embeddings and PP > 1 the last stage holds a copy of the
    embedding as `output_layer.weight`, as mcore does."""
    layers = stages.layers(shape.num_layers, pp, pp_rank)
    experts_per_rank = shape.num_experts // ep if shape.num_experts else 0
    out = {}
    for name, tensor in full.items():
        if name.endswith("_extra_state") or not _on_stage(name, shape, pp, pp_rank):
            continue
        local = name
        if match := _LAYER.match(name):
            index, rest = int(match.group(1)), match.group(2)
            if index not in layers:
                continue
            if expert := _EXPERT.match(rest):
                e = int(expert.group(1))
                if e // experts_per_rank != ep_rank:
                    continue
                rest = f"mlp.experts.local_experts.{e - ep_rank * experts_per_rank}.{expert.group(2)}"
            local = f"decoder.layers.{index - layers.start}.{rest}"
        out[local] = _tp_piece(name, tensor, tp, tp_rank, _rule(name, shape))
    if shape.tied and pp > 1 and pp_rank == pp - 1 and "embedding.word_embeddings.weight" in full:
        out["output_layer.weight"] = _tp_piece("output_layer.weight", full["embedding.word_embeddings.weight"], tp,
                                               tp_rank)
    return out


def merge(pieces: dict[tuple[int, int, int], dict], shape: ModelShape, *, tp: int, pp: int, ep: int = 1,
          stages: Stages = Stages()) -> dict:
    """The inverse of `shard`: {(tp_rank, pp_rank, ep_rank): local state dict} -> the whole mcore state dict."""
    import torch

    experts_per_rank = shape.num_experts // ep if shape.num_experts else 0
    by_name: dict[str, dict[int, Any]] = {}
    for (tp_rank, pp_rank, ep_rank), local in pieces.items():
        layers = stages.layers(shape.num_layers, pp, pp_rank)
        for name, tensor in local.items():
            if name.endswith("_extra_state"):
                continue
            if name == "output_layer.weight" and shape.tied:
                continue  # the last stage's copy of the embedding
            full = name
            if match := _LAYER.match(name):
                rest = match.group(2)
                if expert := _EXPERT.match(rest):
                    rest = (f"mlp.experts.local_experts.{int(expert.group(1)) + ep_rank * experts_per_rank}."
                            f"{expert.group(2)}")
                full = f"decoder.layers.{int(match.group(1)) + layers.start}.{rest}"
            by_name.setdefault(full, {})[tp_rank] = tensor
    out = {}
    for name, parts in by_name.items():
        rule = _rule(name, shape)
        ordered = [parts[r] for r in sorted(parts)]
        if rule == "none" or len(ordered) == 1:
            out[name] = ordered[0]
        elif rule == "rows":
            out[name] = torch.cat(ordered, dim=0)
        elif rule == "cols":
            out[name] = torch.cat(ordered, dim=1)
        else:
            halves = [p.chunk(2, dim=0) for p in ordered]
            out[name] = torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return out
