"""`SwiftTrainer`: transformers.Trainer with atomic checkpoints, args.json in each, and token counting.

`SwiftTrainerMixin` carries those behaviours onto any Trainer subclass (trl's DPO/KTO/GRPO... trainers in rlhf).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from swift.train.run_dir import ARGS_FILE, write_json_atomic

STAGING = ".checkpoint-staging"


class SwiftTrainerMixin:
    """Atomic checkpoints with args.json in each, and a count of the real (non-padding) tokens trained on."""

    def __init__(self, *args: Any, swift_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.swift_args = swift_args or {}
        self.tokens_seen = 0
        self._staging: Path | None = None
        super().__init__(*args, **kwargs)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        from swift.train.distributed import enable_fsdp_on_cpu

        if enable_fsdp_on_cpu(self.accelerator, self.args):  # else FSDP on CPU silently trains as DDP
            self.is_fsdp_enabled = True

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.tokens_seen += count_tokens(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _get_output_dir(self, trial) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then rename it into place: a kill mid-save never leaves a
        half-written checkpoint-N that a resume would trust."""
        run_dir = Path(self.args.output_dir)
        self._staging = run_dir / STAGING
        if self.args.should_save:
            shutil.rmtree(self._staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()  # no rank writes into the staging folder before it is emptied
        try:
            super()._save_checkpoint(model, trial)
        finally:
            staged, self._staging = run_dir / STAGING / f"checkpoint-{self.state.global_step}", None
        # every rank's files (its rng_state_<rank>.pth, its ZeRO / FSDP shards) are written before the rename
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            final = run_dir / staged.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(run_dir / STAGING, ignore_errors=True)
            if self.state.best_model_checkpoint and STAGING in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = str(final)
            self.state.save_to_json(str(final / "trainer_state.json"))
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save and self.swift_args:
            write_json_atomic(Path(output_dir or self.args.output_dir) / ARGS_FILE, self.swift_args)


def count_tokens(inputs: Any) -> int:
    """Non-padding tokens of a batch, whichever layout it has: `attention_mask` (sft, DPO, KTO), the full-sequence
    masks of paired layouts (`chosen_attention_mask`...; CPO/ORPO), `prompt_mask` + `completion_mask` (GRPO)."""
    if not isinstance(inputs, Mapping):  # GRPO's raw prompt rows: counted after generation instead
        return 0
    if (mask := inputs.get("attention_mask")) is not None:
        return int(mask.sum())
    paired = [v for k, v in inputs.items() if k.endswith("_attention_mask") and k != "prompt_attention_mask"]
    if paired:
        return int(sum(int(m.sum()) for m in paired))
    if "completion_mask" in inputs and "prompt_mask" in inputs:
        return int(inputs["prompt_mask"].sum()) + int(inputs["completion_mask"].sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


class SwiftTrainer(SwiftTrainerMixin, Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Causal-LM loss with logits only where a label is: the output head (vocab-sized matmul and softmax) skips
        prompt and padding positions, which saves compute and the largest activation of small models."""
        labels = inputs.get("labels")
        if labels is None or return_outputs or labels.dim() != 2:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch
        import torch.nn.functional as F

        targets = labels[:, 1:]  # logits at position t predict the token at t + 1
        keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
        picked = targets[:, keep]
        loss = F.cross_entropy(outputs.logits.float().flatten(0, 1), picked.flatten(), ignore_index=-100,
                               reduction="sum")
        if num_items_in_batch is None:
            self.loss_is_scaled_for_ga = False
            return loss / torch.clamp((picked != -100).sum(), min=1)
        self.loss_is_scaled_for_ga = True  # normalised over the whole accumulated batch already
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss
