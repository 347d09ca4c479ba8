"""Optimizers behind `--optimizer` (swift.train.plugins registers them): Muon with AdamW for what Muon does not take,
stepped as one optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from swift.core import ConfigError


class CombinedOptimizer(torch.optim.Optimizer):
    """Several torch optimizers stepped as one (what transformers, accelerate and the LR scheduler see): the
    param groups are the inner optimizers' own dicts, so a schedule that sets `group["lr"]` reaches them, and a
    group added later goes to the optimizer its `use_muon` flag names."""

    def __init__(self, optimizers: list[Any]) -> None:  # (Optimizer.__init__ would rebuild the groups: not called)
        self.optimizers = optimizers
        self.defaults = dict(optimizers[0].defaults)
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def add_param_group(self, group: dict) -> None:
        muon = bool(group.get("use_muon"))
        next(o for o in self.optimizers if bool(o.param_groups[0].get("use_muon")) == muon).add_param_group(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable | None = None) -> Any:
        loss = closure() if closure is not None else None
        for o in self.optimizers:
            o.step()
        return loss

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)

    def __repr__(self) -> str:
        return f"CombinedOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"


def muon_with_adamw(model: Any, training_args: Any) -> Any:
    """Muon (Jordan et al. 2024; torch.optim.Muon) on the hidden 2-D weight matrices (LoRA A/B included), AdamW on
    everything else (embeddings, the output head, norms, biases), as Moonlight trains it. `adjust_lr_fn=
    "match_rms_adamw"` scales Muon's update to AdamW's RMS, so one --learning_rate and --weight_decay serve both."""
    matrices, others = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hidden = p.ndim == 2 and not any(k in name for k in ("embed", "lm_head", "wte", "score"))
        (matrices if hidden else others).append(p)
    if not matrices:
        raise ConfigError("--optimizer muon: no trainable 2-D weight matrix to apply Muon to")
    lr, wd = training_args.learning_rate, training_args.weight_decay
    inner = [torch.optim.Muon([{"params": matrices, "use_muon": True}], lr=lr, weight_decay=wd,
                              adjust_lr_fn="match_rms_adamw")]
    if others:
        inner.append(torch.optim.AdamW([{"params": others, "use_muon": False}], lr=lr, weight_decay=wd,
                                       betas=(training_args.adam_beta1, training_args.adam_beta2),
                                       eps=training_args.adam_epsilon))
    return CombinedOptimizer(inner) if len(inner) > 1 else inner[0]
