"""`DatasetMeta`: what Swift knows about one dataset; `LoadOptions`: what a load asks of every row."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class LoadOptions:
    """The settings of one `load_dataset` call that reach the row preprocessors.

    `model_name` / `model_author` are (English, Chinese) pairs, filled into the self-cognition rows.
    `require_answer=False` keeps conversations without an assistant answer (GRPO prompts, inference inputs).
    `columns` renames raw columns of every dataset that has them (`--columns`), before a registered dataset's own.
    """

    strict: bool = True
    seed: int = 42
    num_proc: int = 1
    streaming: bool = False
    model_name: tuple[str, str] | None = None
    model_author: tuple[str, str] | None = None
    require_answer: bool = True
    columns: Mapping[str, str] = field(default_factory=dict)  # --columns: raw name -> name, before the registry's


# A preprocessor rewrites one raw row before it is normalised to `messages`: it may rename, drop or fill in fields,
# and raises `RowProblem` (swift.core.dataset.preprocess) for a row it cannot use.
Preprocessor = Callable[[Row, LoadOptions], Row]


@dataclass(frozen=True)
class DatasetMeta:
    """A named dataset: where it lives (hub ids or a packaged file) and how its rows become `messages`.

    `name` is the registry key (the `--dataset` value). `path` is a file or folder shipped in
    `swift/core/dataset/data/` (or an absolute path); when set it wins over the hub ids, which then only let the hub
    id find this entry. `subsets` lists the hub configs; without `:subset` the first one loads (the hub's default
    config when none are listed). `columns` renames raw columns before normalisation (`{"question": "query"}`).
    """

    name: str
    hf_id: str | None = None
    ms_id: str | None = None  # ModelScope id (USE_MODELSCOPE_HUB=1)
    path: str | None = None
    subsets: tuple[str, ...] = ()
    split: tuple[str, ...] = ("train",)
    columns: Mapping[str, str] = field(default_factory=dict)
    preprocess: Preprocessor | None = None
    requires_identity: bool = False  # rows name the model: loading needs --model_name and --model_author
    tags: tuple[str, ...] = ()
    help: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i for i in (self.hf_id, self.ms_id) if i)
