"""`swift export --merge_lora true` (and `swift merge-lora`): LoRA checkpoint + its base -> one plain HF model."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from swift.core.errors import ConfigError
from swift.train.arguments import ExportArguments
from swift.train.run_dir import ARGS_FILE, read_args, write_json_atomic

logger = logging.getLogger(__name__)


def base_model_of(adapter_dir: Path, given: str | None) -> str:
    """The base model: --model if given, else the checkpoint's args.json, else its adapter_config.json."""
    if given:
        return given
    args = read_args(adapter_dir)
    if args.get("model"):
        return args["model"]
    import json

    config = adapter_dir / "adapter_config.json"
    if config.is_file():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if base:
            return base
    raise ConfigError(f"--adapters {adapter_dir}: no args.json or adapter_config.json names the base model; "
                      "pass --model")


def merge_lora(args: ExportArguments) -> Path:
    import torch
    from peft import PeftModel

    from swift.core import get_model_tokenizer

    adapters = [Path(a) for a in args.export.adapters] or ([Path(args.export.ckpt_dir)] if args.export.ckpt_dir else [])
    if not adapters:
        raise ConfigError("--merge_lora true needs --adapters DIR (or --ckpt_dir DIR)")
    for adapter in adapters:
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"--adapters {adapter}: no adapter_config.json there (is it a LoRA checkpoint?)")
    base = base_model_of(adapters[0], args.model.model)
    output = Path(args.export.output_dir) if args.export.output_dir else adapters[0].with_name(
        adapters[0].name + "-merged")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"--output_dir {output} exists and is not empty; choose another or remove it")
    model, tokenizer = get_model_tokenizer(base, args.model.torch_dtype or "float32", "cpu" if not
                                           torch.cuda.is_available() else args.model.device_map)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        record = read_args(adapters[0]) | {"model": base, "merged_from": [str(a) for a in adapters]}
        write_json_atomic(work / ARGS_FILE, record)
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("merged %s into %s: %s", ", ".join(map(str, adapters)), base, output)
    return output


def run_export(args: ExportArguments) -> Path:
    export = args.export
    if export.merge_lora:
        return merge_lora(args)
    if export.quant_method or export.to_gguf or export.to_ollama or export.push_to_hub:
        raise ConfigError("quantized, GGUF/Ollama and hub exports are not built yet (issue 12); "
                          "--merge_lora true works")
    raise ConfigError("nothing to export: pass --merge_lora true (quantization and GGUF come in a later release)")
