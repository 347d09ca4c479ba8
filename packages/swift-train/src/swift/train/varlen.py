"""Padding-free attention without flash-attention: each packed sequence attends only to itself, at the cost of its
own length squared.

`--padding_free` / `--packing` flatten a batch into one row whose `position_ids` restart at 0 for every sequence.
transformers' sdpa path handles that with a block-diagonal mask over the whole row, so attention costs (sum of
lengths)^2 and SDPA falls back to its masked kernel. `swift_varlen` instead runs causal SDPA per sequence (the fast
unmasked kernel, on CPU too): sum of length^2. Anything that is not a packed row (a padded batch, a KV cache, sliding
windows, soft-capping) goes to transformers' own sdpa with the mask it built, so results never change, only speed.
"""

from __future__ import annotations

import itertools
from typing import Any

NAME = "swift_varlen"
_registered = False


def varlen_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, position_ids: Any = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (position_ids is not None and query.shape[0] == 1 and position_ids.shape[0] == 1
              and query.shape[2] == key.shape[2] == position_ids.shape[-1]
              and kwargs.get("sliding_window") is None and kwargs.get("softcap") is None
              and getattr(module, "sliding_window", None) is None and getattr(module, "is_causal", True))
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() if packed else []
    # A mask that is not None on a row whose positions never restart is padding: transformers' sdpa handles it.
    if not packed or (attention_mask is not None and len(starts) < 2):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    bounds = [*starts, query.shape[2]]
    gqa = query.shape[1] != key.shape[1]
    pieces = [
        F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True,
                                       dropout_p=dropout if module.training else 0.0, scale=scaling, enable_gqa=gqa)
        for s, e in itertools.pairwise(bounds) if e > s]
    out = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `attn_implementation="swift_varlen"` known to transformers (mask creation as for sdpa)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    _registered = True


def use_varlen_attention(model: Any) -> bool:
    """Switch a model that runs sdpa to `swift_varlen` (True when switched). Models on flash-attention keep it: its
    varlen kernel already does this."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
