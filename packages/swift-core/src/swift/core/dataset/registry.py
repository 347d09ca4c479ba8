"""The dataset registry: `DATASETS` maps a name to its `DatasetMeta`; hub ids map back to their entry."""

from __future__ import annotations

import difflib

from swift.core.dataset.meta import DatasetMeta
from swift.core.errors import ConfigError, DuplicateNameError, UnknownDatasetError

DATASETS: dict[str, DatasetMeta] = {}
_BY_ID: dict[str, str] = {}  # lower-cased hub id -> name


def register_dataset(meta: DatasetMeta, *, replace: bool = False) -> None:
    """Add a dataset; an existing name (or one of its hub ids) is refused unless `replace=True`."""
    if not (meta.hf_id or meta.ms_id or meta.path):
        raise ConfigError(f"dataset {meta.name!r} needs a source: hf_id, ms_id or path")
    if meta.name in DATASETS and not replace:
        raise DuplicateNameError(f"dataset {meta.name!r} exists; pass replace=True to override it")
    for hub_id in meta.ids:
        owner = _BY_ID.get(hub_id.lower())
        if owner is not None and owner != meta.name and not replace:
            raise DuplicateNameError(f"dataset id {hub_id!r} is registered under {owner!r} already")
    old = DATASETS.get(meta.name)
    if old is not None:
        for hub_id in old.ids:
            _BY_ID.pop(hub_id.lower(), None)
    DATASETS[meta.name] = meta
    for hub_id in meta.ids:
        _BY_ID[hub_id.lower()] = meta.name


def get_dataset_meta(name: str) -> DatasetMeta:
    """The registered dataset `name`; an unknown name fails with the closest registered names."""
    if name not in DATASETS:
        hint = closest_dataset_names(name)
        raise UnknownDatasetError(f"--dataset {name!r} is not a registered dataset"
                                  + (f"; did you mean {hint}?" if hint else ""))
    return DATASETS[name]


def find_dataset_meta(name_or_id: str) -> DatasetMeta | None:
    """The entry registered under this name or hub id (`openai/gsm8k`), or None."""
    if name_or_id in DATASETS:
        return DATASETS[name_or_id]
    name = _BY_ID.get(name_or_id.lower())
    return DATASETS[name] if name else None


def closest_dataset_names(name: str, n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, list(DATASETS), n=n, cutoff=0.6)
