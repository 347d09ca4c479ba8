"""LLaMA-Pro block expansion: copies of existing decoder blocks, made identity maps, are the only new trainable part.

A copy's output projections (attention o_proj and MLP down_proj) are zeroed, so with the residual stream each new
block starts as the identity and the expanded model computes exactly what the original did.
"""

from __future__ import annotations

import copy
from typing import Any

from swift.core import ConfigError
from swift.tuners.freeze import decoder_layers

_OUTPUT_PROJECTIONS = ("o_proj", "down_proj", "dense", "fc2", "out_proj", "c_proj", "w2")


def expand_blocks(model: Any, num_new_blocks: int) -> list[int]:
    """Insert `num_new_blocks` identity copies, one after each equal group of layers; return their indices."""
    import torch

    layers, path = decoder_layers(model)
    n = len(layers)
    if not 0 < num_new_blocks <= n or n % num_new_blocks:
        raise ConfigError(f"--llamapro_num_new_blocks {num_new_blocks}: must divide the {n} decoder layers")
    group = n // num_new_blocks
    expanded, new_indices = [], []
    for i, layer in enumerate(layers):
        expanded.append(layer)
        if (i + 1) % group == 0:
            block = copy.deepcopy(layer)
            for name, module in block.named_modules():
                if name.rsplit(".", 1)[-1] in _OUTPUT_PROJECTIONS and isinstance(module, torch.nn.Linear):
                    torch.nn.init.zeros_(module.weight)
                    if module.bias is not None:
                        torch.nn.init.zeros_(module.bias)
            new_indices.append(len(expanded))
            expanded.append(block)
    for index, layer in enumerate(expanded):  # the KV cache is addressed by layer index
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attribute, torch.nn.ModuleList(expanded))
    config = model.config
    old_types = getattr(config, "layer_types", None)
    config.num_hidden_layers = len(expanded)
    if isinstance(old_types, list) and len(old_types) == n:
        types = []
        for i, kind in enumerate(old_types):
            types.append(kind)
            if (i + 1) % group == 0:
                types.append(kind)
        config.layer_types = types
    return new_indices
