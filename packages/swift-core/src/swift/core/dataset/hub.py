"""Hub datasets: Hugging Face (`datasets.load_dataset`) or ModelScope (`MsDataset`, USE_MODELSCOPE_HUB=1).

A non-streamed hub dataset is normalised with `Dataset.map` (so `num_proc` workers share the work); a bad row is
marked in an error column rather than raised inside a worker, then reported (strict) or dropped here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from swift.core import env
from swift.core.dataset.build import BadRows, canonical_features, drop_empty_canonical
from swift.core.dataset.meta import DatasetMeta, LoadOptions
from swift.core.dataset.preprocess import RowProblem, check_media, prepare_row
from swift.core.errors import DatasetRowError, MissingBackendError, UnknownDatasetError

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

logger = logging.getLogger(__name__)

ERROR, ERROR_FIELD = "__swift_error__", "__swift_error_field__"
PROBE_ROWS = 100  # rows tried to learn which columns the format consumes


def load_hub(hub_id: str, subset: str | None, split: str, options: LoadOptions, *,
             use_modelscope: bool, label: str) -> Dataset | IterableDataset:
    """One split of one subset from the hub, raw; `label` names the dataset in errors (`--dataset 'gsm8k'`)."""
    streaming, num_proc = options.streaming, options.num_proc
    if use_modelscope:
        try:
            from modelscope import MsDataset
        except ImportError as e:
            raise MissingBackendError("modelscope", extra="swift-core[modelscope]") from e
        try:
            dataset = MsDataset.load(hub_id, subset_name=subset or "default", split=split, use_streaming=streaming)
        except (ConnectionError, FileNotFoundError) as e:
            raise hub_error(label, hub_id, "ModelScope", e) from e
        return dataset if streaming else dataset.to_hf_dataset()
    import datasets

    try:
        return datasets.load_dataset(hub_id, subset, split=split, streaming=streaming, token=env.hub_token(),
                                     num_proc=num_proc if num_proc > 1 and not streaming else None)
    except (ConnectionError, FileNotFoundError) as e:
        raise hub_error(label, hub_id, "Hugging Face", e) from e


def hub_error(label: str, hub_id: str, hub: str, error: Exception) -> UnknownDatasetError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = ""
    if hub == "Hugging Face":
        offline = (" The hub is switched off here (HF_HUB_OFFLINE)." if env.hub_offline()
                   else " Without a network, set HF_HUB_OFFLINE=1 to fail at once instead of retrying.")
    other = "USE_MODELSCOPE_HUB=0 for Hugging Face" if hub == "ModelScope" else "USE_MODELSCOPE_HUB=1 for ModelScope"
    return UnknownDatasetError(
        f"{label}: {hub_id!r} could not be loaded from the {hub} hub: {first}.{offline} Download it where the hub "
        f"is reachable and pass the local file or folder instead (or try {other}).")


def normalize_arrow(dataset: Dataset, meta: DatasetMeta | None, options: LoadOptions, location: str,
                    bad: BadRows) -> Dataset:
    """A raw hub `Dataset` as normalised rows, with `options.num_proc` workers."""
    import numpy as np
    from datasets import Value

    if options.columns:
        dataset = dataset.rename_columns({k: v for k, v in options.columns.items() if k in dataset.column_names})
    if meta is not None and meta.columns:
        dataset = dataset.rename_columns({k: v for k, v in meta.columns.items() if k in dataset.column_names})
    extras = _extra_columns(dataset, meta, options)
    features = canonical_features()
    for name in extras:
        features[name] = dataset.features[name]
    features[ERROR], features[ERROR_FIELD] = Value("string"), Value("string")

    def normalize_batch(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list[Any]] = {name: [] for name in features}
        for i in range(len(next(iter(batch.values())))):
            raw = {name: values[i] for name, values in batch.items()}
            try:
                row, problem = check_media(prepare_row(raw, meta, options), None), None
            except RowProblem as p:
                row, problem = raw, p
            for name in features:
                out[name].append(row.get(name) if problem is None or name in extras else None)
            out[ERROR][-1] = problem.reason if problem else None
            out[ERROR_FIELD][-1] = problem.field if problem else None
        return out

    consumed = [name for name in dataset.column_names if name not in extras]
    dataset = dataset.map(normalize_batch, batched=True, features=features,
                          remove_columns=consumed, num_proc=options.num_proc if options.num_proc > 1 else None,
                          desc=f"Preprocessing {location}")
    errors = dataset.data.column(ERROR)
    if errors.null_count < len(errors):
        is_bad = errors.is_valid().to_numpy(zero_copy_only=False)
        reasons, fields = errors.to_pylist(), dataset.data.column(ERROR_FIELD).to_pylist()
        for index in map(int, np.flatnonzero(is_bad)):
            bad.handle(DatasetRowError(location, index + 1, fields[index], f"{reasons[index]} (row {index + 1})"),
                       options)
        dataset = dataset.select(np.flatnonzero(~is_bad))
        dataset = dataset.flatten_indices()
    return drop_empty_canonical(dataset.remove_columns([ERROR, ERROR_FIELD]))


def _extra_columns(dataset: Dataset, meta: DatasetMeta | None, options: LoadOptions) -> list[str]:
    """The raw columns a good row keeps unchanged (`solution`, `id`...): learned from the first good rows."""
    for raw in dataset.select(range(min(PROBE_ROWS, len(dataset)))):
        try:
            row = prepare_row(raw, meta, options)
        except RowProblem:
            continue
        return [name for name in dataset.column_names if name in row and name not in canonical_features()]
    return []
