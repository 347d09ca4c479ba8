"""The tuner registry: one `TunerMeta` per `--train_type`; the flag's choices are its keys.

A tuner is one entry: how it changes the model, and the two facts the trainer needs (does it train the base weights
themselves; can its rows be packed padding-free). The built-in entries are in `builtin.py`; a plugin file given to
`--custom_register_path` adds its own the same way:

    from swift.tuners import TunerMeta, register_tuner, only_train

    def apply_bias_only(model, args, context):
        only_train(model, [r".*\\.bias"])
        return model

    register_tuner(TunerMeta("bias", apply_bias_only, "train the biases only", full_weights=True))

This module stays light: `swift sft --help` reads the keys; nothing here imports torch or peft.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swift.core import add_entry, choices_of, find_entry

if TYPE_CHECKING:
    from swift.tuners.arguments import TunerArgs


@dataclass(frozen=True)
class TunerContext:
    """What a tuner may need beyond its flags."""

    total_steps: int | None = None  # optimizer steps of the run (AdaLoRA's schedule)
    seed: int = 42
    learning_rate: float | None = None  # the run's (per-part learning rates of multimodal models are factors on it)
    # (batch_size, max_length, count) -> `count` collated training batches (model inputs with labels): for inits that
    # look at data (LoRA-GA's gradients); None where the command has no training rows
    sample_batches: Callable[[int, int, int], Iterable[dict]] | None = None


@dataclass
class Tuned:
    """A tuner's result: the model to train, plus what the trainer must do for it."""

    model: Any
    callbacks: list[Any] = field(default_factory=list)  # transformers TrainerCallbacks (LISA re-draws its layers)
    lr_ratios: dict[str, float] = field(default_factory=dict)  # parameter-name substring -> learning-rate factor


ApplyFn = Callable[[Any, "TunerArgs", TunerContext], "Tuned | Any"]


@dataclass(frozen=True)
class TunerMeta:
    """One `--train_type`.

    `apply(model, args, context)` returns the model to train (or a `Tuned` when the trainer must add callbacks or
    per-parameter learning rates). `full_weights`: the tuner trains weights of the base model itself, so its
    checkpoints hold full weights and its default learning rate is the full-training one. `padding_free`: False when
    the tuner cannot keep packed rows apart (prompt and prefix tuning: peft drops `position_ids`). `not_built`: the
    reason, for a name that is offered (ms-swift has it) but refused when chosen.
    """

    name: str
    apply: ApplyFn | None
    help: str = ""
    full_weights: bool = False
    padding_free: bool = True
    not_built: str | None = None

    @property
    def default_learning_rate(self) -> float:
        return 1e-5 if self.full_weights else 1e-4


TUNERS: dict[str, TunerMeta] = {}


def register_tuner(meta: TunerMeta, *, replace: bool = False) -> None:
    if meta.apply is None and meta.not_built is None:
        raise ValueError(f"tuner {meta.name!r}: give apply, or not_built with the reason")
    add_entry(TUNERS, meta.name, meta, kind="tuner", replace=replace)


def get_tuner(name: str) -> TunerMeta:
    _load_builtin()
    return find_entry(TUNERS, name, flag="--train_type")


def tuner_choices() -> dict[str, str | None]:
    """`--train_type` choices: name -> None, or why it is not built yet."""
    _load_builtin()
    return choices_of(TUNERS)


def _load_builtin() -> None:
    from swift.tuners import builtin  # noqa: F401  (registers the built-in tuners on first use)
