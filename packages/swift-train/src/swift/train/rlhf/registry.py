"""The RLHF method registry: one `RlhfMethod` per `--rlhf_type`; the flag's choices are its keys.

The built-in methods are in `methods.py`. A method is one entry: how to build its trainer from the run (`build`),
and what to check before anything loads (`check`). A plugin (`--custom_register_path` or `--external_plugins`)
registers its own the same way. This module stays light: `swift rlhf --help` reads the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swift.core import add_entry, choices_of, find_entry

if TYPE_CHECKING:
    from swift.train.arguments import RlhfArguments
    from swift.train.recipe import Run


@dataclass(frozen=True)
class RlhfMethod:
    """One `--rlhf_type`.

    `build(run)` returns `(trainer, training rows)` for a run whose model, template and rows are loaded.
    `check(args)` returns flag problems that show before anything loads. `loss_types`: the `--loss_type` values it
    takes (empty: none); `max_losses`: how many may be combined. `answers`: its rows need an assistant answer (GRPO's
    are prompts). `num_labels`: load a sequence-classification head (reward models). `media`: it trains on rows
    with images, videos or audio (else such rows are refused). `cached_mode`: the `swift export --template_mode`
    whose --cached_dataset rows it trains on (None: it takes none). `not_built`: the reason, for a name that is
    offered but refused when chosen.
    """

    name: str
    build: Callable[[Run], tuple[Any, int]] | None
    help: str = ""
    default_beta: float | None = None
    loss_types: tuple[str, ...] = ()
    max_losses: int = 1
    uses_ref_model: bool = False
    answers: bool = True
    num_labels: int | None = None
    check: Callable[[RlhfArguments], list[str]] | None = None
    media: bool = False
    cached_mode: str | None = None
    not_built: str | None = None


METHODS: dict[str, RlhfMethod] = {}


def register_method(method: RlhfMethod, *, replace: bool = False) -> None:
    if method.build is None and method.not_built is None:
        raise ValueError(f"rlhf method {method.name!r}: give build, or not_built with the reason")
    add_entry(METHODS, method.name, method, kind="rlhf method", replace=replace)


def get_method(name: str) -> RlhfMethod:
    _load_builtin()
    return find_entry(METHODS, name, flag="--rlhf_type")


def method_choices() -> dict[str, str | None]:
    """`--rlhf_type` choices: name -> None, or why it is not built yet."""
    _load_builtin()
    return choices_of(METHODS)


def _load_builtin() -> None:
    from swift.train.rlhf import methods  # noqa: F401  (registers the built-in methods on first use)
