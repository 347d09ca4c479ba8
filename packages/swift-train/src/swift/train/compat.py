"""Every place swift-train relies on private code of transformers, accelerate or trl, in one module.

Each shim below names the upstream code it depends on; `tests/train/test_compat.py` checks that code still looks the
way the shim assumes (signatures, the calls it hooks into), so an upgrade of transformers or trl fails there, loudly,
instead of somewhere in a training run. Everything else in swift-train uses public API: callbacks, collators,
`Trainer.create_optimizer` / `training_step` / `compute_loss` (documented override points).

| shim | upstream | why |
|---|---|---|
| `AtomicCheckpoints` | `Trainer._save_checkpoint`, `Trainer._get_output_dir` | write checkpoint-N in a staging folder and rename it into place (a kill mid-save leaves no half checkpoint a resume would trust); no callback runs before the files are written, and the output dir cannot move (tensorboard's run folder hangs off it) |
| `FsdpOnCpu` | `Trainer.create_accelerator_and_postprocess`, accelerate's `PartialState._shared_state` | accelerate runs a CPU "FSDP" run as DDP without a word |
| `InHookGradNorm` | `Trainer._clip_grad_norm`, `Trainer._get_grad_norm` (called in `Trainer._run_epoch`) | `--galore_optim_per_parameter` frees each gradient in its hook, so the norm transformers logs would be 0: report the one the hooks measured |
| `pretokenized(...)` | trl's `DPOTrainer._prepare_dataset`, `KTOTrainer._prepare_dataset`, `CPOTrainer.tokenize_row`, `ORPOTrainer.tokenize_row`, `GRPOTrainer._tokenize_prompts` | rows come tokenized by our template; trl would re-render them with the chat template (no public switch) |
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

STAGING = ".checkpoint-staging"


class AtomicCheckpoints:
    """Trainer mixin: checkpoints written under `<run>/.checkpoint-staging/` and renamed into place when every rank
    has written its files (its rng_state_<rank>.pth, its ZeRO / FSDP shards); `swift_args` is written into each."""

    def __init__(self, *args: Any, swift_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.swift_args = swift_args or {}
        self._staging: Path | None = None
        super().__init__(*args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        from swift.core.run import ARGS_FILE, write_json_atomic

        run_dir = Path(self.args.output_dir)
        self._staging = run_dir / STAGING
        if self.args.should_save:
            shutil.rmtree(self._staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()  # no rank writes into the staging folder before it is emptied
        try:
            super()._save_checkpoint(model, trial)
        finally:
            staged, self._staging = run_dir / STAGING / f"checkpoint-{self.state.global_step}", None
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return
        if self.swift_args:
            write_json_atomic(staged / ARGS_FILE, self.swift_args)
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


class InHookGradNorm:
    """Trainer mixin: an optimizer that steps each weight in its gradient hook (`swift.train.galore.StepInBackward`)
    measured the gradient norm there, before the gradients were freed; log that one (and clip nothing here: each
    weight was clipped in its hook)."""

    def _in_hook_norm(self) -> Any:
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # (accelerate's AcceleratedOptimizer wraps it)
        return getattr(inner, "take_grad_norm", None)

    def _clip_grad_norm(self, model):
        take = self._in_hook_norm()
        return take() if take is not None else super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        take = self._in_hook_norm()
        if grad_norm is None and take is not None:
            grad_norm = take()
        return super()._get_grad_norm(model, grad_norm=grad_norm)


class FsdpOnCpu:
    """Trainer mixin: `--fsdp` on CPU (gloo) really shards (accelerate would switch to FSDP for GPU-like devices
    only)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args):
            self.is_fsdp_enabled = True


def enable_fsdp_on_cpu(accelerator: Any, args: Any) -> bool:
    """Make accelerate run FSDP on CPU (gloo). A CPU run with an FSDP plugin silently trains as DDP. The distributed
    type must be set in `AcceleratorState` *and* in `PartialState._shared_state` (accelerate copies the latter back
    over the former; with only the first, gradient clipping uses each rank's local norm). True when it switched."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin_args = dict(args.fsdp_plugin_args)
    if plugin_args.get("fsdp_version", 1) == 1:
        plugin_args["sync_module_states"] = False  # FSDP1 broadcasts through the device of `device_id`: none on CPU
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


# trl's tokenizing hooks, replaced so that rows tokenized by our template pass through unchanged.

def _keep_dataset(self, dataset, processing_class, args, dataset_name):
    return dataset


def _kto_prepare_dataset(self, dataset, processing_class, args, dataset_name):
    """Our KTO rows carry prompt_ids / completion_ids; add the mismatched completions that estimate KTO's KL term as
    trl does (completions rotated by one within each batch)."""
    if not self.calculate_KL:
        return dataset

    def add_kl(batch: dict) -> dict:
        completions = batch["completion_ids"]
        batch["KL_completion_ids"] = [completions[-1], *completions[:-1]]
        return batch

    return dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)


def _keep_row(self, feature, model=None):
    return feature


def _template_prompts(self, prompts: list):
    """GRPO prompts rendered by our template (`self.swift_template`, set by the trainer) into prompt ids."""
    if self.swift_template is None or not isinstance(prompts[0], list):
        from trl import GRPOTrainer

        return GRPOTrainer._tokenize_prompts(self, prompts)
    ids = [self.swift_template.encode({"messages": prompt})["input_ids"] for prompt in prompts]
    return ids, None, {}


# trl trainer class name -> {hook: replacement}; test_compat checks each hook's signature upstream.
PRETOKENIZED_HOOKS: dict[str, dict[str, Any]] = {
    "DPOTrainer": {"_prepare_dataset": _keep_dataset},
    "KTOTrainer": {"_prepare_dataset": _kto_prepare_dataset},
    "CPOTrainer": {"tokenize_row": _keep_row},
    "ORPOTrainer": {"tokenize_row": _keep_row},
    "GRPOTrainer": {"_tokenize_prompts": _template_prompts},
}


def pretokenized(base: type) -> type:
    """`base` (a trl trainer) taking rows already tokenized by our template; other trainers are returned as they are
    (RewardTrainer and GKDTrainer take token ids natively)."""
    hooks = PRETOKENIZED_HOOKS.get(base.__name__)
    if not hooks:
        return base
    return type(f"Pretokenized{base.__name__}", (base,), dict(hooks))
