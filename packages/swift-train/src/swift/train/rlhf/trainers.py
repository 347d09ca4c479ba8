"""trl's trainers with our behaviours (atomic checkpoints, args.json, token counts, LoRA+) and our tokenization.

Every trainer takes datasets that `swift.train.rlhf.data` already tokenized with our template; `compat.pretokenized`
stops trl from tokenizing them a second time with its own rendering of the chat template.
"""

from __future__ import annotations

from typing import Any

from swift.train.compat import pretokenized
from swift.train.trainer import SwiftTrainerMixin, count_tokens


def swift_trainer(base: type) -> type:
    """`base` (a trl trainer class) with SwiftTrainerMixin, taking our pre-tokenized rows."""
    return type(f"Swift{base.__name__}", (SwiftTrainerMixin, pretokenized(base)), {})


def grpo_trainer_class() -> type:
    from trl import GRPOTrainer

    class SwiftGRPOTrainer(SwiftTrainerMixin, pretokenized(GRPOTrainer)):
        """GRPO whose prompts are rendered by our template, and whose tokens are counted after generation (the raw
        batch is a list of prompt rows)."""

        def __init__(self, *args: Any, template: Any = None, **kwargs: Any) -> None:
            self.swift_template = template
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.tokens_seen += count_tokens(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SwiftGRPOTrainer
