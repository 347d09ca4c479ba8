"""Reading local dataset files row by row, each row with its 1-based line (.jsonl) or row number (other formats).

Rows are read with the standard library (pyarrow for parquet), not through `datasets`' loaders: a file whose rows
disagree (one `messages` a string, the next a list) must still name the bad line instead of failing as a whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from swift.core.dataset.meta import Row
from swift.core.dataset.preprocess import RowProblem
from swift.core.errors import ConfigError, DatasetRowError

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt")
LINE_NUMBERED = (".jsonl", ".ndjson", ".txt")  # the others count rows, not lines

RawRow = Row | RowProblem  # a row, or why the line could not be read as one


def list_files(path: Path, subset: str | None = None) -> list[Path]:
    """The data files of a file or folder; `subset` picks a sub-folder or the files named `subset.*` of a folder."""
    if path.is_file():
        if subset:
            raise ConfigError(f"--dataset {path}:{subset}: a single file has no subsets; drop ':{subset}'")
        if path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"--dataset {path}: unsupported file type {path.suffix!r}; use one of {list(SUFFIXES)}")
        return [path]
    if subset:
        folder = path / subset
        if folder.is_dir():
            return list_files(folder)
        files = [f for f in list_files(path) if f.parent == path and f.stem == subset]
        if not files:
            names = sorted({p.name if p.is_dir() else p.stem for p in path.iterdir() if not p.name.startswith(".")})
            raise ConfigError(f"--dataset {path}:{subset}: no sub-folder or file named {subset!r}; have {names}")
        return files
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ConfigError(f"--dataset {path}: the folder holds no data files ({', '.join(SUFFIXES)})")
    return files


def read_rows(path: Path) -> Iterator[tuple[int, RawRow]]:
    """(line or row number, row) for every row of one file; an unreadable row comes as a `RowProblem`."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix in (".csv", ".tsv"):
        yield from _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix == ".txt":
        yield from _read_text(path)
    else:
        raise ConfigError(f"--dataset {path}: unsupported file type {suffix!r}; use one of {list(SUFFIXES)}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, RawRow]]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, _parse_object(line)


def _parse_object(line: str) -> RawRow:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return RowProblem(None, f"invalid JSON: {e.msg} (column {e.colno})")
    if not isinstance(row, dict):
        return RowProblem(None, f"a row must be a JSON object, got {type(row).__name__}")
    return row


def _read_json(path: Path) -> Iterator[tuple[int, RawRow]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved as .json
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield number, _parse_object(line)
            return
        raise DatasetRowError(str(path), e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if isinstance(data, dict):  # {"data": [...]}-style files with one list of rows
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise DatasetRowError(str(path), 1, None, "expected a JSON list of row objects (or JSON Lines)")
    for number, row in enumerate(data, 1):
        yield number, row if isinstance(row, dict) else RowProblem(
            None, f"a row must be a JSON object, got {type(row).__name__}")


def _read_csv(path: Path, *, delimiter: str) -> Iterator[tuple[int, RawRow]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        for number, row in enumerate(csv.DictReader(f, delimiter=delimiter), 1):
            if None in row:
                yield number, RowProblem(None, f"has more cells than the header has columns: {row[None]!r}")
                continue
            yield number, {k: v for k, v in row.items() if v not in ("", None)}  # an empty cell is a missing value


def _read_parquet(path: Path) -> Iterator[tuple[int, RawRow]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _read_text(path: Path) -> Iterator[tuple[int, RawRow]]:
    """Pre-training text: one row per non-blank line."""
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, {"text": line.rstrip("\n")}
