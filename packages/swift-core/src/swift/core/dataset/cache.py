"""Encoded rows on disk: `--load_from_cache_file` (reuse the encoding of the same rows by the same template) and
cached datasets (`swift export --to_cached_dataset true` writes one, `swift sft --cached_dataset DIR` trains on it).

A cached dataset is a folder with `train/` (and `val/`) saved by datasets' `save_to_disk`, plus `cached_dataset.json`
saying what encoded it (template, tokenizer vocabulary, max length, truncation) so that a mismatch with the run that
reads it is an error naming the folder, not silently wrong token ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swift.core.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

CACHED_DATASET_FILE = "cached_dataset.json"
_FORMAT = 1


def template_identity(template: Any) -> dict[str, Any]:
    """What decides the token ids of an encoded row (compared when a cached dataset is read back)."""
    tokenizer = template.tokenizer
    chat = getattr(tokenizer, "chat_template", None) or template.chat_template or ""
    return {"template": template.name, "vocab_size": len(tokenizer),
            "tokenizer": getattr(tokenizer, "name_or_path", ""),
            "chat_template_sha256": hashlib.sha256(str(chat).encode()).hexdigest()[:16],
            "options": repr(template.options)}


def cached_encode(rows: Dataset, key_parts: dict[str, Any], encode: Callable[[], Any]) -> Any:
    """`encode()`'s dataset, saved under Swift's cache keyed by `key_parts` (+ the rows' content fingerprint) and
    loaded from there when the same rows were encoded the same way before."""
    from datasets import Dataset, load_from_disk

    from swift.core.env import swift_cache

    fingerprint = getattr(rows, "_fingerprint", None)
    if not isinstance(rows, Dataset) or not fingerprint:
        return encode()
    key = hashlib.sha256(json.dumps({"rows": fingerprint, "format": _FORMAT, **key_parts}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:24]
    directory = swift_cache() / "encoded" / key
    if (directory / "dataset_info.json").is_file():
        logger.info("--load_from_cache_file: encoded rows read from %s", directory)
        return load_from_disk(str(directory))
    encoded = encode()
    if isinstance(encoded, Dataset):
        _save_atomic(encoded, directory)
        logger.info("--load_from_cache_file: encoded rows cached in %s", directory)
    return encoded


def _save_atomic(dataset: Dataset, directory: Path) -> None:
    """save_to_disk into a sibling, then rename: a reader never sees half a cache (and two ranks do not clash)."""
    staged = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}")
    staged.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(staged))
    try:
        os.replace(staged, directory)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staged, ignore_errors=True)


def save_cached_dataset(directory: Path, splits: dict[str, Dataset], identity: dict[str, Any],
                        **meta: Any) -> Path:
    """Write a cached dataset folder (`train/`, `val/`, cached_dataset.json); refuses a non-empty folder."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"--output_dir {directory}: not empty; a cached dataset needs a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, dataset in splits.items():
        if dataset is not None:
            _save_atomic(dataset, directory / name)
            rows[name] = len(dataset)
    info = {"format": _FORMAT, **identity, "rows": rows, **meta}
    (directory / CACHED_DATASET_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    return directory


TEMPLATE_MODES = {"train": "swift pt / sft and megatron sft", "rlhf": "swift rlhf --rlhf_type dpo, cpo, simpo, orpo or rm",
                  "kto": "swift rlhf --rlhf_type kto"}


def load_cached_dataset(specs: list[str], template: Any, *, split: str = "train", seed: int = 42,
                        flag: str = "--cached_dataset", template_mode: str = "train") -> Dataset:
    """The `split` of each cached dataset folder (`DIR[#N]`: N rows sampled with `seed`), checked against the
    template that will train on it and the layout (`swift export --template_mode`) the reader takes,
    concatenated."""
    from datasets import concatenate_datasets, load_from_disk

    parts = []
    mine = template_identity(template)
    for spec in specs:
        path, _, count = spec.partition("#")
        directory = Path(path).expanduser()
        info_file = directory / CACHED_DATASET_FILE
        if not info_file.is_file():
            raise ConfigError(f"{flag} {spec}: no {CACHED_DATASET_FILE} there (write one with swift export "
                              "--to_cached_dataset true)")
        info = json.loads(info_file.read_text(encoding="utf-8"))
        mode = info.get("template_mode", "train")
        if mode != template_mode:
            raise ConfigError(f"{flag} {spec}: exported with --template_mode {mode} (rows for {TEMPLATE_MODES[mode]}); "
                              f"this run reads --template_mode {template_mode} rows ({TEMPLATE_MODES[template_mode]}): "
                              f"export it again with --template_mode {template_mode}")
        for field in ("vocab_size", "chat_template_sha256", "template"):
            if info.get(field) != mine[field]:
                raise ConfigError(f"{flag} {spec}: encoded with {field} {info.get(field)!r}, this run's is "
                                  f"{mine[field]!r}; export it again with this --model / --template")
        if not (directory / split).is_dir():
            available = ", ".join(sorted(info.get("rows", {}))) or "none"
            raise ConfigError(f"{flag} {spec}: has no {split!r} split (it has: {available})")
        dataset = load_from_disk(str(directory / split))
        if count:
            if not count.isdigit() or int(count) < 1:
                raise ConfigError(f"{flag} {spec}: #N takes a positive row count")
            dataset = _sample(dataset, int(count), seed)
        parts.append(dataset)
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _sample(dataset: Dataset, n: int, seed: int) -> Dataset:
    """n rows: the whole dataset repeated as often as it fits, the rest sampled (as `--dataset name#N` does)."""
    import random

    whole, rest = divmod(n, len(dataset))
    indices = list(range(len(dataset))) * whole + random.Random(seed).sample(range(len(dataset)), rest)
    return dataset.select(indices)
