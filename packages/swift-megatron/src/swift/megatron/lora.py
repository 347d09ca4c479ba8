"""LoRA on mcore's parallel linears (`--train_type lora`), exact under tensor parallelism.

A LoRA pair hangs off the parallel linear it adapts (`...linear_qkv.lora_A.weight`, `.lora_B.weight`), and a
forward hook adds `scale * B(A(dropout(x)))` to the layer's output:

- column-parallel (linear_qkv, linear_fc1): A [r, in] is replicated, B [out/tp, r] is split like the weight. The
  rank-r activation goes through `copy_to_tensor_model_parallel_region` so A's gradient (and x's) sums every
  rank's share of B.
- row-parallel (linear_proj, linear_fc2): A [r, in/tp] is split like the weight, B [out, r] is replicated; the
  partial rank-r activations are summed with `reduce_from_tensor_model_parallel_region`.

The whole-model LoRA tensors are drawn from a seeded generator by name and then split with the same rules as the
weights, so TP=1 and TP=2 runs start from the same adapter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from swift.core import ConfigError
from swift.megatron.convert import ModelShape, split_rule

HF_TO_MCORE = {"q_proj": "linear_qkv", "k_proj": "linear_qkv", "v_proj": "linear_qkv", "o_proj": "linear_proj",
               "gate_proj": "linear_fc1", "up_proj": "linear_fc1", "down_proj": "linear_fc2"}
MCORE_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: int
    dropout: float
    targets: tuple[str, ...]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}


def resolve_targets(target_modules: list[str]) -> tuple[str, ...]:
    """`all-linear` or HF / mcore module names -> the mcore linears to adapt."""
    found: list[str] = []
    for name in target_modules:
        if name in ("all-linear", "all_linear"):
            found += MCORE_TARGETS
        elif name in HF_TO_MCORE or name in MCORE_TARGETS:
            found.append(HF_TO_MCORE.get(name, name))
        else:
            raise ConfigError(f"--target_modules {name!r}: use all-linear or q_proj/k_proj/v_proj/o_proj/gate_proj/"
                              f"up_proj/down_proj (or mcore's {', '.join(MCORE_TARGETS)})")
    return tuple(t for t in MCORE_TARGETS if t in found)


def _dims(target: str, shape: ModelShape) -> tuple[int, int]:
    """(in, out) of a whole (TP=1) mcore linear."""
    attn = shape.num_heads * shape.head_dim
    qkv = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    return {"linear_qkv": (shape.hidden_size, qkv), "linear_proj": (attn, shape.hidden_size),
            "linear_fc1": (shape.hidden_size, 2 * shape.ffn_hidden_size),
            "linear_fc2": (shape.ffn_hidden_size, shape.hidden_size)}[target]


def _module_path(target: str) -> str:
    return ("self_attention." if target in ("linear_qkv", "linear_proj") else "mlp.") + target


def init_lora_full(shape: ModelShape, spec: LoraSpec, seed: int) -> dict:
    """Whole-model LoRA tensors by mcore name: A as PEFT draws it (kaiming-uniform, a=sqrt(5)), B zero."""
    import torch

    if shape.num_experts and any(t in ("linear_fc1", "linear_fc2") for t in spec.targets):
        raise ConfigError("--target_modules: LoRA on MoE experts is not supported; use q_proj,k_proj,v_proj,o_proj")
    out = {}
    for layer in range(shape.num_layers):
        for target in spec.targets:
            fan_in, fan_out = _dims(target, shape)
            name = f"decoder.layers.{layer}.{_module_path(target)}"
            generator = torch.Generator().manual_seed(seed * 1_000_003 + layer * 31 + MCORE_TARGETS.index(target))
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) on a [r, fan_in] weight
            out[f"{name}.lora_A.weight"] = (torch.rand(spec.rank, fan_in, generator=generator) * 2 - 1) * bound
            out[f"{name}.lora_B.weight"] = torch.zeros(fan_out, spec.rank)
    return out


def attach_lora(model: Any, spec: LoraSpec, dtype: Any) -> list[str]:
    """Add empty LoRA pairs (local shapes) to every targeted parallel linear and freeze everything else; the
    values come from `init_lora_full` + `shard` or a checkpoint. Returns the adapted module names."""
    import torch

    from megatron.core.tensor_parallel import set_tensor_model_parallel_attributes

    for param in model.parameters():
        param.requires_grad = False
    adapted = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in spec.targets or "local_experts" in name:
            continue
        weight = module.weight  # [out/tp, in] for column-parallel, [out, in/tp] for row-parallel
        out_features, in_features = weight.shape
        module.lora_A = torch.nn.Linear(in_features, spec.rank, bias=False, dtype=dtype)
        module.lora_B = torch.nn.Linear(spec.rank, out_features, bias=False, dtype=dtype)
        module.lora_dropout = torch.nn.Dropout(spec.dropout) if spec.dropout > 0 else torch.nn.Identity()
        column = leaf in ("linear_qkv", "linear_fc1")
        split = module.lora_B.weight if column else module.lora_A.weight
        set_tensor_model_parallel_attributes(split, True, 0 if column else 1, 1)
        module.register_forward_hook(_column_hook if column else _row_hook)
        module.lora_scaling = spec.scaling
        adapted.append(name)
    if not adapted:
        raise ConfigError(f"--target_modules matched no mcore linear ({', '.join(spec.targets)})")
    return adapted


@contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """The base model: every LoRA pair of `model` switched off (DPO's reference pass; on every tensor-parallel rank
    alike, so the row-parallel hooks' collectives are skipped everywhere)."""
    modules = [module for module in model.modules() if hasattr(module, "lora_A")]
    for module in modules:
        module.lora_enabled = False
    try:
        yield
    finally:
        for module in modules:
            module.lora_enabled = True


def _column_hook(module, args, output):
    from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region

    if not getattr(module, "lora_enabled", True):
        return output
    out, bias = output
    low = copy_to_tensor_model_parallel_region(module.lora_A(module.lora_dropout(args[0])))
    return out + module.lora_B(low) * module.lora_scaling, bias


def _row_hook(module, args, output):
    from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

    if not getattr(module, "lora_enabled", True):
        return output
    out, bias = output
    low = reduce_from_tensor_model_parallel_region(module.lora_A(module.lora_dropout(args[0])))
    return out + module.lora_B(low) * module.lora_scaling, bias


def lora_state(model: Any) -> dict:
    """What a LoRA checkpoint holds: the adapter, plus weights trained beside it (a task's classification head)."""
    beside = {name for name, param in model.named_parameters() if getattr(param, "swift_saved_with_adapter", False)}
    return {k: v for k, v in model.state_dict().items() if ".lora_" in k or k in beside}


def merge_lora_full(full: dict, spec: LoraSpec) -> dict:
    """Whole mcore weights + whole LoRA tensors -> merged weights (W + scale * B @ A), LoRA keys dropped."""
    out = {k: v for k, v in full.items() if ".lora_" not in k}
    for key in [k for k in full if k.endswith(".lora_A.weight")]:
        base = key[: -len(".lora_A.weight")]
        delta = full[base + ".lora_B.weight"].float() @ full[key].float() * spec.scaling
        out[base + ".weight"] = (out[base + ".weight"].float() + delta).to(out[base + ".weight"].dtype)
    return out


_LORA_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(self_attention|mlp)\.(\w+)\.lora_([AB])\.weight$")


def to_peft(full_lora: dict, shape: ModelShape) -> dict:
    """Whole mcore LoRA tensors -> PEFT names on the HF model (q/k/v share linear_qkv's A; gate/up share fc1's A)."""
    from swift.megatron.convert import _qkv_to_hf

    out = {}
    for key, tensor in full_lora.items():
        match = _LORA_KEY.match(key)
        if not match:
            continue
        layer, target, ab = int(match.group(1)), match.group(3), match.group(4)
        prefix = f"base_model.model.model.layers.{layer}."
        if target == "linear_qkv":
            parts = {"q_proj": tensor, "k_proj": tensor, "v_proj": tensor} if ab == "A" else dict(
                zip(("q_proj", "k_proj", "v_proj"), _qkv_to_hf(tensor, shape), strict=True))
            out.update({f"{prefix}self_attn.{n}.lora_{ab}.weight": t.clone() for n, t in parts.items()})
        elif target == "linear_proj":
            out[f"{prefix}self_attn.o_proj.lora_{ab}.weight"] = tensor
        elif target == "linear_fc1":
            parts = {"gate_proj": tensor, "up_proj": tensor} if ab == "A" else dict(
                zip(("gate_proj", "up_proj"), tensor.chunk(2, dim=0), strict=True))
            out.update({f"{prefix}mlp.{n}.lora_{ab}.weight": t.clone().contiguous() for n, t in parts.items()})
        else:
            out[f"{prefix}mlp.down_proj.lora_{ab}.weight"] = tensor
    return out


def peft_targets(spec: LoraSpec) -> list[str]:
    return sorted(hf for hf, mcore in HF_TO_MCORE.items() if mcore in spec.targets)


__all__ = ["LoraSpec", "adapters_disabled", "attach_lora", "init_lora_full", "lora_state", "merge_lora_full",
           "resolve_targets", "split_rule", "to_peft"]
