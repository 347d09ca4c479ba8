"""Datasets: the registry, `load_dataset` (files, folders, hub ids, registered names -> `messages` rows) and the
encoding helpers used by training (length filter, packing). `datasets` is imported only when a function runs.
"""

from swift.core.dataset import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from swift.core.dataset.encode import LazyEncodedDataset, encode_dataset, pack_dataset, pack_rows, plan_bins
from swift.core.dataset.load import load_dataset, parse_spec
from swift.core.dataset.meta import DatasetMeta, LoadOptions
from swift.core.dataset.preprocess import RowProblem, normalize_row
from swift.core.dataset.registry import DATASETS, find_dataset_meta, get_dataset_meta, register_dataset

__all__ = [
    "DATASETS",
    "DatasetMeta",
    "LazyEncodedDataset",
    "LoadOptions",
    "RowProblem",
    "encode_dataset",
    "find_dataset_meta",
    "get_dataset_meta",
    "load_dataset",
    "normalize_row",
    "pack_dataset",
    "pack_rows",
    "parse_spec",
    "plan_bins",
    "register_dataset",
]
