"""Optimizers behind `--optimizer` (swift.train.plugins registers them): Muon with AdamW for what Muon does not take,
stepped as one optimizer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from swift.core import ConfigError


def parse_optim_args(text: str | None) -> dict[str, str]:
    """`--optim_args "k=v,k2=v2"` -> {k: v} (transformers' format); a malformed entry is a flag error."""
    out = {}
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--optim_args {text!r}: {item!r} is not key=value (write k=v,k2=v2)")
        out[key] = value
    return out


def typed_optim_args(cls: Any, text: str | None, *, taken: set[str] = frozenset(), flag: str = "--optim") -> dict:
    """--optim_args entries as keyword arguments of optimizer class `cls`, each converted to its parameter's default
    type. An entry the class does not take is an error (unless `taken`: consumed elsewhere, e.g. by transformers)."""
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "params")}
    out = {}
    for key, value in parse_optim_args(text).items():
        if key in taken:
            continue
        if key not in params:
            raise ConfigError(f"--optim_args {key}={value}: {flag} ({cls.__name__}) takes no {key!r} (it takes: "
                              f"{', '.join(k for k in params if k != 'lr')})")
        default = params[key].default
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            elif isinstance(default, int):  # (bool, an int subclass, is handled above)
                out[key] = int(float(value))
            elif isinstance(default, float):
                out[key] = float(value)
            elif isinstance(default, tuple):
                out[key] = tuple(float(v) for v in value.split(":"))
            else:
                out[key] = value
        except ValueError:
            raise ConfigError(f"--optim_args {key}={value}: expected a value like {default!r}") from None
    return out


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
    "match_rms_adamw"` scales Muon's update to AdamW's RMS, so one --learning_rate and --weight_decay serve both.
    --optim_args sets Muon's own arguments (momentum, nesterov, ns_steps, eps, adjust_lr_fn)."""
    matrices, others = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hidden = p.ndim == 2 and not any(k in name for k in ("embed", "lm_head", "wte", "score"))
        (matrices if hidden else others).append(p)
    if not matrices:
        raise ConfigError("--optimizer muon: no trainable 2-D weight matrix to apply Muon to")
    lr, wd = training_args.learning_rate, training_args.weight_decay
    settings = {"adjust_lr_fn": "match_rms_adamw"} | typed_optim_args(
        torch.optim.Muon, training_args.optim_args, flag="--optimizer muon")  # momentum, nesterov, ns_steps...
    inner = [torch.optim.Muon([{"params": matrices, "use_muon": True}], lr=lr, weight_decay=wd, **settings)]
    if others:
        inner.append(torch.optim.AdamW([{"params": others, "use_muon": False}], lr=lr, weight_decay=wd,
                                       betas=(training_args.adam_beta1, training_args.adam_beta2),
                                       eps=training_args.adam_epsilon))
    return CombinedOptimizer(inner) if len(inner) > 1 else inner[0]
