"""trl's trainers with our behaviours (atomic checkpoints, args.json, token counts) and our tokenization.

Every trainer takes datasets that `swift.train.rlhf.data` already tokenized with our template; the overrides below
only stop trl from tokenizing them a second time with its own rendering of the chat template.
"""

from __future__ import annotations

from typing import Any

from swift.train.trainer import SwiftTrainerMixin, count_tokens


def _identity_dataset(self, dataset, processing_class, args, dataset_name):
    return dataset


def dpo_trainer_class():
    from trl import DPOTrainer

    class SwiftDPOTrainer(SwiftTrainerMixin, DPOTrainer):
        _prepare_dataset = _identity_dataset

    return SwiftDPOTrainer


def kto_trainer_class():
    from trl import KTOTrainer

    class SwiftKTOTrainer(SwiftTrainerMixin, KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            """Our rows already carry prompt_ids / completion_ids; add the mismatched completions that estimate KTO's
            KL term as trl does (completions rotated by one within each batch)."""
            if not self.calculate_KL:
                return dataset

            def add_kl(batch: dict) -> dict:
                completions = batch["completion_ids"]
                batch["KL_completion_ids"] = [completions[-1], *completions[:-1]]
                return batch

            return dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)

    return SwiftKTOTrainer


def paired_trainer_class(kind: str):
    """trl's CPO (also SimPO) and ORPO trainers: they tokenize rows one by one in `tokenize_row`; our rows already
    hold that method's output."""
    if kind == "orpo":
        from trl.experimental.orpo import ORPOTrainer as Base
    else:
        from trl.experimental.cpo import CPOTrainer as Base

    class SwiftPairedTrainer(SwiftTrainerMixin, Base):
        def tokenize_row(self, feature, model=None):
            return feature

    SwiftPairedTrainer.__name__ = f"Swift{Base.__name__}"
    return SwiftPairedTrainer


def reward_trainer_class():
    from trl import RewardTrainer

    class SwiftRewardTrainer(SwiftTrainerMixin, RewardTrainer):
        pass  # RewardTrainer takes rows with chosen_ids / rejected_ids as they are

    return SwiftRewardTrainer


def gkd_trainer_class():
    from trl.experimental.gkd import GKDTrainer

    class SwiftGKDTrainer(SwiftTrainerMixin, GKDTrainer):
        pass

    return SwiftGKDTrainer


def grpo_trainer_class():
    from trl import GRPOTrainer

    class SwiftGRPOTrainer(SwiftTrainerMixin, GRPOTrainer):
        """GRPO whose prompts are rendered by our template (`_tokenize_prompts`), and whose tokens are counted after
        generation (the raw batch is a list of prompt rows)."""

        def __init__(self, *args: Any, template: Any = None, **kwargs: Any) -> None:
            self.swift_template = template
            super().__init__(*args, **kwargs)

        def _tokenize_prompts(self, prompts: list):
            if self.swift_template is None or not isinstance(prompts[0], list):
                return super()._tokenize_prompts(prompts)
            ids = [self.swift_template.encode({"messages": prompt})["input_ids"] for prompt in prompts]
            return ids, None, {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.tokens_seen += count_tokens(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SwiftGRPOTrainer
