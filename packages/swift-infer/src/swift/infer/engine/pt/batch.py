"""`DecodeBatch`: the sequences decoded together, left-padded, with one KV cache for all of them.

Every row's real tokens sit at the right end of the cache; the attention mask hides the padding on the left and
each row has its own position ids, so a row computes exactly what it would alone. New rows are prefilled as a
batch of their own and merged in (the shorter cache is padded on the left); finished rows are dropped and padding
columns that no row needs any more are cut. transformers' `DynamicCache` holds the tensors; we only reshape its
layers' `keys` / `values` ([batch, kv_heads, seq, head_dim]) between steps, never during a forward.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

# forward(input_ids [B, L], attention_mask [B, T], position_ids [B, L], cache, adapter_names, media=None) -> logits
# [B, V] of the last position of each row; `media`: a multimodal prompt's processor outputs (prefill only)
Forward = Callable[..., torch.Tensor]


SPARE_TOKENS = 64  # room a cache layer keeps for the next steps' keys and values


def new_cache() -> Any:
    from transformers import DynamicCache

    # No config: plain full-attention layers for every model, even sliding-window ones (their masks still apply the
    # window), so that rows of different lengths can be merged and cut the same way in every layer.
    cache = DynamicCache()
    cache.layer_class_to_replicate = _slack_layer_class()
    return cache


@functools.cache
def _slack_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        """A `DynamicLayer` whose `keys` / `values` are views of buffers with room to grow: a decoding step writes
        its new keys and values in place, where `DynamicLayer` copies the whole cache (`torch.cat`) in every layer."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.set(key_states, value_states)
                return self.keys, self.values
            used, new = self.keys.shape[-2], key_states.shape[-2]
            if used + new > self._key_buffer.shape[-2]:
                self.set(self.keys, self.values, spare=max(SPARE_TOKENS, new))
            self._key_buffer[:, :, used:used + new].copy_(key_states)
            self._value_buffer[:, :, used:used + new].copy_(value_states)
            self.keys = self._key_buffer[:, :, :used + new]
            self.values = self._value_buffer[:, :, :used + new]
            return self.keys, self.values

        def set(self, keys: torch.Tensor, values: torch.Tensor, spare: int = SPARE_TOKENS) -> None:
            """Hold exactly these keys / values, with `spare` free positions after them."""
            batch, heads, length, dim = keys.shape
            self._key_buffer = keys.new_empty((batch, heads, length + spare, dim))
            self._value_buffer = values.new_empty((batch, heads, length + spare, values.shape[-1]))
            self._key_buffer[:, :, :length].copy_(keys)
            self._value_buffer[:, :, :length].copy_(values)
            self.keys, self.values = self._key_buffer[:, :, :length], self._value_buffer[:, :, :length]

    return SlackLayer


class DecodeBatch:
    def __init__(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor, next_tokens: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask  # [B, T] 1 for real tokens, 0 for padding; T == cached tokens
        self.positions = positions  # [B] position id of each row's next input token
        self.next_tokens = next_tokens  # [B] the token each row feeds next (sampled, not yet cached)

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @classmethod
    def prefill(cls, forward: Forward, prompts: Sequence[Sequence[int]], adapter_names: Sequence[str] | None,
                pad_id: int, device: torch.device, *, media: dict[str, Any] | None = None,
                rope_index: Any = None) -> tuple[DecodeBatch, torch.Tensor]:
        """Run the prompts (left-padded) through the model: the batch, and logits [b, V] for their first token.

        `media`: the processor outputs of ONE multimodal prompt (pixel_values...), passed to its prefill. With
        `rope_index` (Qwen-VL's 3-D M-RoPE) the prompt's positions come from it, and the row's later text positions
        are shifted by its rope delta (images take fewer positions than tokens), as transformers' generate does."""
        if media:
            return cls._prefill_media(forward, prompts, adapter_names, device, media, rope_index)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache()
        logits = forward(ids, mask, position_ids, cache, adapter_names)
        positions = mask.sum(-1)
        return cls(cache, mask, positions, torch.zeros_like(positions)), logits

    @classmethod
    def _prefill_media(cls, forward: Forward, prompts: Sequence[Sequence[int]], adapter_names: Sequence[str] | None,
                       device: torch.device, media: dict[str, Any], rope_index: Any) -> tuple[DecodeBatch, torch.Tensor]:
        if len(prompts) != 1:
            raise ValueError("a prompt with media prefills alone")
        ids = torch.tensor([list(prompts[0])], dtype=torch.long, device=device)
        mask = torch.ones_like(ids)
        inputs: dict[str, Any] = {}
        for key, value in media.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            inputs[key] = (tensor[None] if key.endswith("token_type_ids") and tensor.dim() == 1 else tensor).to(device)
        position_ids: torch.Tensor = (mask.cumsum(-1) - 1)
        delta = torch.zeros((1,), dtype=torch.long, device=device)
        if rope_index is not None and "mm_token_type_ids" in inputs:
            accepted = set(inspect.signature(rope_index).parameters)
            kwargs = {"input_ids": ids, "attention_mask": mask, **inputs}
            position_ids, deltas = rope_index(**{k: v for k, v in kwargs.items() if k in accepted})
            delta = deltas.reshape(-1).to(device=device, dtype=torch.long)
        cache = new_cache()
        logits = forward(ids, mask, position_ids, cache, adapter_names, inputs)
        return cls(cache, mask, mask.sum(-1) + delta, torch.zeros((1,), dtype=torch.long, device=device)), logits

    def step(self, forward: Forward, adapter_names: Sequence[str] | None) -> torch.Tensor:
        """Feed each row's next token: logits [B, V] for the token after it."""
        ones = torch.ones((len(self), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = forward(self.next_tokens[:, None], self.mask, self.positions[:, None], self.cache, adapter_names)
        self.positions = self.positions + 1
        return logits

    def select(self, keep: Sequence[int]) -> None:
        """Keep only rows `keep` (in that order), then drop padding columns no row needs."""
        index = torch.tensor(list(keep), dtype=torch.long, device=self.mask.device)
        self.mask, self.positions, self.next_tokens = self.mask[index], self.positions[index], self.next_tokens[index]
        unused = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-padding columns
        if unused:
            self.mask = self.mask[:, unused:]
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            _set_layer(layer, layer.keys[index, :, unused:], layer.values[index, :, unused:])

    def merge(self, other: DecodeBatch) -> None:
        """Append `other`'s rows, padding whichever cache is shorter on the left."""
        width = max(self.width, other.width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            _set_layer(mine, torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)], dim=0),
                       torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)], dim=0))
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(other.mask, width)], dim=0)
        self.positions = torch.cat([self.positions, other.positions])
        self.next_tokens = torch.cat([self.next_tokens, other.next_tokens])


def _set_layer(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    if hasattr(layer, "set"):
        layer.set(keys, values)
    else:
        layer.keys, layer.values = keys, values


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (-1 for masks [B, T], -2 for cache tensors [B, H, T, D]) on the left."""
    if tensor.dim() == 2:
        missing = width - tensor.shape[1]
        return F.pad(tensor, (missing, 0)) if missing else tensor
    missing = width - tensor.shape[-2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor
