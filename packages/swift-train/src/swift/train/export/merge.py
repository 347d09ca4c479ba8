"""The model an export starts from: `--model`, or `--adapters` merged into their base; and `--merge_lora` itself."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swift.core import ConfigError, processing_class
from swift.core.run import ARGS_FILE, adapter_for_base, model_folder_name, read_args, write_json_atomic
from swift.train.arguments import ExportArguments

logger = logging.getLogger(__name__)


@dataclass
class Source:
    """The unquantized model an export starts from (fp32, adapters merged) and where it came from."""

    model: Any
    tokenizer: Any
    model_id: str  # what the user named: the base id, or the adapter checkpoint
    base_dir: Path | None  # the base model's files on disk (adapters, if any, are merged in memory only)
    adapters: list[Path]


def base_model_of(adapter_dir: Path, given: str | None) -> str:
    """The base model: --model if given, else the checkpoint's args.json, else its adapter_config.json."""
    if given:
        return given
    args = read_args(adapter_dir)
    if args.get("model"):
        return args["model"]
    config = adapter_dir / "adapter_config.json"
    if config.is_file():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if base:
            return base
    raise ConfigError(f"--adapters {adapter_dir}: no args.json or adapter_config.json names the base model; "
                      "pass --model")


def adapter_dirs(args: ExportArguments) -> list[Path]:
    adapters = [Path(a) for a in args.export.adapters]
    if not adapters and args.export.ckpt_dir and (Path(args.export.ckpt_dir) / "adapter_config.json").is_file():
        adapters = [Path(args.export.ckpt_dir)]
    for adapter in adapters:
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"--adapters {adapter}: no adapter_config.json there (is it a LoRA checkpoint?)")
    return adapters


def model_of(args: ExportArguments) -> str:
    """The id or directory of the model to export (a full-weights --ckpt_dir counts as --model)."""
    adapters = adapter_dirs(args)
    if adapters:
        return base_model_of(adapters[0], args.model.model)
    if args.export.ckpt_dir:
        return args.export.ckpt_dir
    if not args.model.model:
        raise ConfigError("nothing to export: pass --model ID_OR_DIR or --adapters CHECKPOINT")
    return args.model.model


def default_output(args: ExportArguments, suffix: str) -> Path:
    """--output_dir, else beside the (first) checkpoint, else output/<model-name>-<suffix>."""
    if args.export.output_dir:
        return Path(args.export.output_dir)
    adapters = adapter_dirs(args)
    if adapters:
        return adapters[0].with_name(f"{adapters[0].name}-{suffix}")
    return Path("output") / f"{model_folder_name(model_of(args))}-{suffix}"


def check_empty(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output_dir {output} exists and is not empty; choose another or remove it")


def load_source(args: ExportArguments) -> Source:
    """The model in fp32 on CPU with every adapter merged, and its tokenizer."""
    from peft import PeftModel

    from swift.core import load_model

    adapters = adapter_dirs(args)
    base = model_of(args)
    model, tokenizer = load_model(args.model, model=base, torch_dtype="float32", device_map="cpu")
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter_for_base(adapter)).merge_and_unload()
    info = getattr(tokenizer, "swift_model_info", None)
    base_dir = Path(info.model_dir) if info is not None else None
    return Source(model.eval(), tokenizer, str(adapters[0]) if adapters else base, base_dir, adapters)


def save_atomic(output: Path, write: Any) -> Path:
    """Call `write(work_dir)` in a temporary sibling of `output`, then rename it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    work.chmod(0o755)
    try:
        write(work)
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def merge_lora(args: ExportArguments) -> Path:
    """`--merge_lora true`: the adapters merged into their base, saved as a plain transformers model."""
    import torch
    from peft import PeftModel

    from swift.core import head_labels, load_model

    adapters = adapter_dirs(args)
    if not adapters:
        raise ConfigError("--merge_lora true needs --adapters DIR (or --ckpt_dir DIR)")
    base = base_model_of(adapters[0], args.model.model)
    output = default_output(args, "merged")
    check_empty(output)
    recorded = read_args(adapters[0])  # a seq_cls / reranker adapter merges into its classification head
    num_labels = head_labels(args.model.task_type or recorded.get("task_type"),
                             args.model.num_labels or recorded.get("num_labels"))
    model, tokenizer = load_model(args.model, model=base, torch_dtype=args.model.torch_dtype or "float32",
                                  rope_scaling=args.model.rope_scaling or recorded.get("rope_scaling"),
                                  max_model_len=args.model.max_model_len or recorded.get("max_model_len"),
                                  device_map=args.model.device_map if torch.cuda.is_available() else "cpu",
                                  num_labels=num_labels)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter_for_base(adapter)).merge_and_unload()

    def write(work: Path) -> None:
        model.save_pretrained(work, safe_serialization=True)
        processing_class(tokenizer).save_pretrained(work)
        record = read_args(adapters[0]) | {"model": base, "merged_from": [str(a) for a in adapters]}
        write_json_atomic(work / ARGS_FILE, record)

    save_atomic(output, write)
    logger.info("merged %s into %s: %s", ", ".join(map(str, adapters)), base, output)
    return output
