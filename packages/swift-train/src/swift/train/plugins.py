"""What an `--external_plugins` file may add to `swift sft` / `pt` / `rlhf`: a loss (`--loss_type NAME`), an optimizer
(`--optimizer NAME`) and trainer callbacks (`--callbacks NAME`), next to the models, templates, datasets and reward
functions that the core registries take. Built in: the `muon` optimizer.

    from swift.train import register_loss

    @register_loss("focal")
    def focal(outputs, labels, num_items_in_batch=None):  # transformers' compute_loss_func contract
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swift.core import ConfigError, DuplicateNameError

LossFunc = Callable[..., Any]  # (outputs, labels, num_items_in_batch=None) -> scalar loss tensor
OptimizerFactory = Callable[[Any, Any], Any]  # (model, transformers TrainingArguments) -> torch.optim.Optimizer

_LOSSES: dict[str, LossFunc] = {}
_OPTIMIZERS: dict[str, OptimizerFactory] = {}
_CALLBACKS: dict[str, type] = {}


def _register(table: dict, kind: str, name: str) -> Callable:
    def add(obj: Any) -> Any:
        if name in table:
            raise DuplicateNameError(f"{kind} {name!r} is registered already")
        table[name] = obj
        return obj
    return add


def register_loss(name: str) -> Callable[[LossFunc], LossFunc]:
    """`--loss_type NAME` (sft/pt): `fn(outputs, labels, num_items_in_batch=None)`, outputs with the full logits;
    given `num_items_in_batch` (the label tokens of the whole accumulated batch) the loss is divided by it."""
    return _register(_LOSSES, "loss", name)


def register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    """`--optimizer NAME`: `factory(model, training_args) -> torch.optim.Optimizer` over the trainable parameters;
    the learning-rate schedule then drives every param group's `lr`."""
    return _register(_OPTIMIZERS, "optimizer", name)


def register_callback(name: str) -> Callable[[type], type]:
    """`--callbacks NAME`: a `transformers.TrainerCallback` subclass, built with no arguments."""
    return _register(_CALLBACKS, "callback", name)


def loss_choices() -> dict[str, None]:
    return dict.fromkeys(_LOSSES)


def optimizer_choices() -> dict[str, None]:
    return dict.fromkeys(_OPTIMIZERS)


def callback_choices() -> dict[str, None]:
    return dict.fromkeys(_CALLBACKS)


def get_loss(name: str) -> LossFunc | None:
    return _LOSSES.get(name)


def build_optimizer(name: str, model: Any, training_args: Any) -> Any:
    if name not in _OPTIMIZERS:
        raise ConfigError(f"--optimizer {name}: unknown (known: {', '.join(_OPTIMIZERS)})")
    return _OPTIMIZERS[name](model, training_args)


def build_callbacks(names: list[str]) -> list[Any]:
    return [_CALLBACKS[n]() for n in names]


@register_optimizer("muon")
def muon(model: Any, training_args: Any) -> Any:
    """Muon on the hidden weight matrices, AdamW on the rest (swift.train.optimizers)."""
    from swift.train.optimizers import muon_with_adamw

    return muon_with_adamw(model, training_args)
