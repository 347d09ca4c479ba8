"""`load_dataset`: files, folders, registered names and hub ids -> (train, val) datasets of `messages` rows.

Each `--dataset` value is `name_or_path[:subset][#N]`. It resolves, in this order, to an existing file or folder, a
registered dataset (by name or by one of its hub ids), or a hub id (`org/name`). `#N` takes N rows sampled with the
seed; an N larger than the data repeats it whole and samples the rest (as ms-swift does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swift.core import env
from swift.core.dataset.build import BadRows, concat_datasets, drop_empty_canonical, rows_to_dataset
from swift.core.dataset.hub import load_hub, normalize_arrow
from swift.core.dataset.meta import DatasetMeta, LoadOptions, Row
from swift.core.dataset.preprocess import RowProblem, check_media, prepare_row
from swift.core.dataset.read import LINE_NUMBERED, SUFFIXES, list_files, read_rows
from swift.core.dataset.registry import closest_dataset_names, find_dataset_meta
from swift.core.errors import ConfigError, DatasetRowError, SwiftError, UnknownDatasetError

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

logger = logging.getLogger(__name__)

PACKAGED_DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class DatasetSource:
    """One `--dataset` value, resolved: local `files`, or `hub_id` (with `meta` when it is registered)."""

    text: str
    subsets: tuple[str, ...]
    n: int | None
    meta: DatasetMeta | None = None
    files: tuple[Path, ...] = ()
    hub_id: str | None = None
    use_modelscope: bool = False

    @property
    def label(self) -> str:
        return f"--dataset {self.text!r}"


def load_dataset(
    datasets: Sequence[str],
    *,
    split_dataset_ratio: float = 0.0,
    strict: bool = True,
    seed: int = 42,
    num_proc: int = 1,
    streaming: bool = False,
    model_name: Sequence[str] | str | None = None,
    model_author: Sequence[str] | str | None = None,
    require_answer: bool = True,
    columns: Mapping[str, str] | None = None,
) -> tuple[Dataset | IterableDataset, Dataset | None]:
    """Load and normalise datasets; returns (train, val), val None without `split_dataset_ratio`.

    `strict=False` skips bad rows and logs one warning with their count and the first few locations.
    `model_name` / `model_author` fill the self-cognition rows: [NAME, NAME_ZH] (one value serves both languages).
    `require_answer=False` keeps conversations that end without an assistant answer (GRPO prompts).
    `columns` renames raw columns (`{"text1": "query"}`) in every dataset that has them; a name that is in none of
    them is an error.
    With `streaming`, train is an `IterableDataset`, `#N` takes the first N rows and there is no split.
    """
    options = LoadOptions(strict=strict, seed=seed, num_proc=num_proc, streaming=streaming,
                          model_name=_name_pair(model_name, "model_name"),
                          model_author=_name_pair(model_author, "model_author"), require_answer=require_answer,
                          columns=dict(columns or {}))
    _check(datasets, split_dataset_ratio, options)
    sources = resolve_sources(datasets, options)
    _check_columns(sources, options)
    if streaming:
        return _stream(sources, options), None
    bad = BadRows()
    trains, vals = [], []
    for source in sources:
        skipped = bad.count
        dataset = _load_source(source, options, bad)
        if len(dataset) == 0:
            skipped = bad.count - skipped
            bad.log()
            raise ConfigError(f"{source.label} has no usable rows"
                              + (f": all {skipped} were bad and skipped (--strict false)" if skipped else ""))
        dataset = _sample(dataset, source.n, seed)
        train, val = _split(dataset, split_dataset_ratio, seed)
        trains.append(train)
        if val is not None:
            vals.append(val)
    bad.log()
    return concat_datasets(trains), concat_datasets(vals) if vals else None


def _check_columns(sources: list[DatasetSource], options: LoadOptions) -> None:
    """--columns names raw columns: each must be a column of at least one dataset (read from each file's first row;
    with a hub dataset among them, whose columns are known only once it is downloaded, not checked)."""
    if not options.columns or any(source.hub_id is not None for source in sources):
        return
    seen: set[str] = set()
    for file in (file for source in sources for file in source.files):
        first = next(iter(read_rows(file)), None)
        if first is not None and isinstance(first[1], dict):
            seen.update(first[1])
    missing = [k for k in options.columns if k not in seen]
    if missing:
        raise ConfigError(f"--columns: {', '.join(map(repr, missing))} is a column of none of the datasets "
                          f"(their columns: {', '.join(sorted(seen)) or 'none'})")


def _check(datasets: Sequence[str], ratio: float, options: LoadOptions) -> None:
    """Every problem with the arguments at once."""
    problems = []
    if isinstance(datasets, str):
        problems.append(f"datasets must be a list of names or paths, got the string {datasets!r}")
    elif not datasets:
        problems.append("no --dataset given")
    if not 0.0 <= ratio < 1.0:
        problems.append(f"--split_dataset_ratio {ratio} must be in [0, 1)")
    if options.streaming and ratio > 0:
        problems.append("--split_dataset_ratio needs the whole dataset; with --streaming pass --val_dataset instead")
    if options.num_proc < 1:
        problems.append(f"--dataset_num_proc {options.num_proc} must be at least 1")
    if problems:
        raise ConfigError("; ".join(problems))


def _name_pair(value: Sequence[str] | str | None, flag: str) -> tuple[str, str] | None:
    values = [value] if isinstance(value, str) else list(value or [])
    if len(values) > 2:
        raise ConfigError(f"--{flag} takes one or two values (English, Chinese), got {values}")
    return (values[0], values[-1]) if values else None


def parse_spec(text: str) -> tuple[str, tuple[str, ...], int | None]:
    """`name_or_path[:subset[/subset2]][#N]` -> (name_or_path, subsets, N)."""
    name, n = text, None
    if not Path(text).expanduser().exists() and "#" in text:
        name, _, count = text.rpartition("#")
        if not count.strip().isdigit() or int(count) < 1:
            raise ConfigError(f"--dataset {text!r}: '#' must be followed by a positive row count, as in {name}#1000")
        n = int(count)
    subsets: tuple[str, ...] = ()
    if not Path(name).expanduser().exists() and ":" in name:
        head, _, tail = name.rpartition(":")
        if head and tail:
            name, subsets = head, tuple(s for s in tail.split("/") if s)
    return name, subsets, n


def resolve_sources(datasets: Sequence[str], options: LoadOptions) -> list[DatasetSource]:
    """Resolve every `--dataset` value before any is loaded, reporting all that fail at once."""
    sources, errors = [], []
    for text in datasets:
        try:
            sources.append(_resolve(text, options))
        except SwiftError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        kind = UnknownDatasetError if all(isinstance(e, UnknownDatasetError) for e in errors) else ConfigError
        raise kind("; ".join(str(e) for e in errors))
    return sources


def _resolve(text: str, options: LoadOptions) -> DatasetSource:
    name, subsets, n = parse_spec(text)
    path = Path(name).expanduser()
    if path.exists():
        return DatasetSource(text, subsets, n, files=_local_files(path, subsets))
    meta = find_dataset_meta(name)
    if meta is not None:
        _check_needs(meta, options, text)
        if meta.subsets:
            unknown = [s for s in subsets if s not in meta.subsets]
            if unknown:
                raise UnknownDatasetError(f"--dataset {text!r}: {meta.name!r} has no subset {unknown}; "
                                          f"its subsets are {list(meta.subsets)}")
            subsets = subsets or meta.subsets[:1]
        if meta.path:
            packaged = Path(meta.path) if Path(meta.path).is_absolute() else PACKAGED_DATA / meta.path
            return DatasetSource(text, subsets, n, meta=meta, files=_local_files(packaged, subsets))
        use_modelscope = (env.use_modelscope_hub() and meta.ms_id is not None) or meta.hf_id is None
        return DatasetSource(text, subsets, n, meta=meta, hub_id=meta.ms_id if use_modelscope else meta.hf_id,
                             use_modelscope=use_modelscope)
    if path.suffix.lower() in SUFFIXES or name.startswith((".", "/", "~")):
        raise UnknownDatasetError(f"--dataset {text!r}: no such file or folder ({path.resolve()})")
    if _is_hub_id(name):
        return DatasetSource(text, subsets, n, hub_id=name, use_modelscope=env.use_modelscope_hub())
    hint = closest_dataset_names(name)
    raise UnknownDatasetError(f"--dataset {text!r} is neither a file or folder, a registered dataset nor a hub id "
                              "(org/name)" + (f"; did you mean {hint}?" if hint else ""))


def _local_files(path: Path, subsets: tuple[str, ...]) -> tuple[Path, ...]:
    if not subsets:
        return tuple(list_files(path))
    return tuple(f for subset in subsets for f in list_files(path, subset))


def _check_needs(meta: DatasetMeta, options: LoadOptions, text: str) -> None:
    if meta.requires_identity and (options.model_name is None or options.model_author is None):
        raise ConfigError(f"--dataset {text!r} needs the identity to teach: pass --model_name NAME [NAME_ZH] and "
                          "--model_author AUTHOR [AUTHOR_ZH], e.g. --model_name Nova 诺瓦 --model_author Acme 艾克米")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(p.strip() for p in parts)


def _iter_rows(source: DatasetSource, options: LoadOptions, bad: BadRows) -> Iterator[Row]:
    """Normalised rows of a local source (or a streamed hub one); a bad row is raised or counted."""
    for location, number, raw in _raw_rows(source, options):
        try:
            if isinstance(raw, RowProblem):
                raise raw
            row = prepare_row(raw, source.meta, options)
            yield check_media(row, Path(location).parent if source.hub_id is None else None)
        except RowProblem as p:
            line_numbered = Path(location).suffix.lower() in LINE_NUMBERED
            bad.handle(DatasetRowError(location, number, p.field,
                                       p.reason if line_numbered else f"{p.reason} (row {number})"), options)


def _raw_rows(source: DatasetSource, options: LoadOptions) -> Iterator[tuple[str, int, Row | RowProblem]]:
    if source.hub_id is None:
        for file in source.files:
            for number, raw in read_rows(file):
                yield str(file), number, raw
        return
    for subset, split, dataset in _hub_parts(source, options):
        for number, raw in enumerate(dataset, 1):
            yield _hub_location(source, subset, split), number, raw


def _hub_parts(source: DatasetSource, options: LoadOptions):
    splits = source.meta.split if source.meta is not None else ("train",)
    for subset in source.subsets or (None,):
        for split in splits:
            yield subset, split, load_hub(source.hub_id, subset, split, options,
                                          use_modelscope=source.use_modelscope, label=source.label)


def _hub_location(source: DatasetSource, subset: str | None, split: str) -> str:
    return f"{source.hub_id}" + (f":{subset}" if subset else "") + f" [{split}]"


def _load_source(source: DatasetSource, options: LoadOptions, bad: BadRows) -> Dataset:
    if source.hub_id is None:
        return drop_empty_canonical(rows_to_dataset(_iter_rows(source, options, bad)))
    parts = [normalize_arrow(dataset, source.meta, options, _hub_location(source, subset, split), bad)
             for subset, split, dataset in _hub_parts(source, options)]
    return concat_datasets(parts)


def _stream(sources: list[DatasetSource], options: LoadOptions) -> IterableDataset:
    from datasets import IterableDataset

    def generate() -> Iterator[Row]:
        bad = BadRows()
        for source in sources:
            for count, row in enumerate(_iter_rows(source, options, bad)):
                if source.n is not None and count >= source.n:
                    break
                yield row
        bad.log()

    return IterableDataset.from_generator(generate)


def _sample(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """N rows chosen with the seed; past the dataset's length every row repeats and the rest is sampled."""
    if n is None or len(dataset) == 0 or n == len(dataset):
        return dataset
    import numpy as np

    total = len(dataset)
    permutation = np.random.default_rng(seed).permutation(total)
    indices = np.concatenate([np.tile(np.arange(total), n // total), permutation[: n % total]])
    return dataset.select(indices)


def _split(dataset: Dataset, ratio: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Hold out `ratio` of the rows (at least one, never all) for validation, chosen with the seed."""
    if ratio <= 0 or len(dataset) < 2:
        return dataset, None
    import numpy as np

    total = len(dataset)
    n_val = min(total - 1, max(1, int(np.ceil(total * ratio))))
    permutation = np.random.default_rng(seed).permutation(total)
    return dataset.select(np.sort(permutation[n_val:])), dataset.select(np.sort(permutation[:n_val]))
