"""A faster LoRA dropout for CPUs.

On CPU, `nn.Dropout` draws one Mersenne-Twister float per element: for LoRA's dropout on the input of every adapted
linear layer that costs more than the layers themselves once the matmuls run in bf16 on AMX (measured: ~20% of a
training step of SmolLM2-135M). `FastDropout` draws 64 random bits per four elements and keeps an element when its
16-bit lane clears a threshold (drop probability p to within 1/65536), applied in the autocast dtype the following
matmul uses anyway. On other devices it is `nn.functional.dropout`.

It is an `nn.Dropout`, so code that finds dropouts by type treats it as one: trl's trainers set `p = 0` on every
`nn.Dropout` (`disable_dropout`, on by default for DPO, GRPO, KTO, ...) and that must reach the LoRA dropouts too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FastDropout(nn.Dropout):
    def __init__(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        super().__init__(p)

    @property
    def threshold(self) -> int:
        """int16 lanes below it are dropped (p may change after construction, as trl's disable_dropout does)."""
        return -32768 + round(self.p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        if torch.is_autocast_enabled("cpu") and x.is_floating_point():
            x = x.to(torch.get_autocast_dtype("cpu"))
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        lanes = words.view(torch.int16)[:n].view(x.shape)
        return torch.where(lanes >= self.threshold, x * (1.0 / (1.0 - self.p)), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def speed_up_lora_dropout(model: Any) -> int:
    """Swap peft's `nn.Dropout` LoRA dropouts for `FastDropout` (same p); returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and dropout.p > 0:
                dropouts[name] = FastDropout(dropout.p)
                swapped += 1
    return swapped
