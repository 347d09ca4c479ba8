"""`swift export --to_cached_dataset true`: --dataset encoded with the model's template into a folder that
`swift sft --cached_dataset` trains on without tokenising again (swift.core.dataset.cache holds the format)."""

from __future__ import annotations

import logging
from pathlib import Path

from swift.core import ConfigError
from swift.train.arguments import ExportArguments

logger = logging.getLogger(__name__)


def check_cached_export(args: ExportArguments) -> list[str]:
    export, problems = args.export, []
    others = [flag for flag, on in (("--quant_method", export.quant_method), ("--to_gguf", export.to_gguf),
                                    ("--to_ollama", export.to_ollama), ("--merge_lora", export.merge_lora),
                                    ("--push_to_hub", export.push_to_hub)) if on]
    if others:
        problems.append(f"--to_cached_dataset writes encoded rows, not a model: drop {', '.join(others)}")
    if not args.data.dataset:
        problems.append("--to_cached_dataset needs --dataset: the rows to encode")
    if not args.model.model:
        problems.append("--to_cached_dataset needs --model: its tokenizer and template encode the rows")
    if args.data.streaming or args.data.lazy_tokenize:
        problems.append("--to_cached_dataset encodes every row up front: drop --streaming / --lazy_tokenize")
    if (args.model.task_type or "causal_lm") != "causal_lm":
        problems.append(f"--to_cached_dataset with --task_type {args.model.task_type}: not built yet (cached "
                        "datasets hold chat rows encoded for causal_lm training)")
    return problems


def export_cached_dataset(args: ExportArguments) -> Path:
    from swift.core import build_template, load_model, load_rows, save_cached_dataset, template_identity
    from swift.train.export.merge import check_empty, default_output

    output = default_output(args, "cached_dataset")
    check_empty(output)
    train_rows, val_rows = load_rows(args.data)
    _, tokenizer = load_model(args.model, load_model=False)
    template = build_template(args.template, tokenizer)
    mode = args.export.template_mode
    splits = {name: _encode(rows, template, args, mode) for name, rows in (("train", train_rows), ("val", val_rows))}
    if len(splits["train"]) == 0:
        raise ConfigError(f"--dataset {' '.join(args.data.dataset)}: no row fits --max_length "
                          f"{args.template.max_length}" + (" with an answer left" if mode != "train" else ""))
    save_cached_dataset(output, splits, template_identity(template), template_mode=mode, model=args.model.model,
                        max_length=args.template.max_length, truncation_strategy=args.template.truncation_strategy,
                        dataset=list(args.data.dataset))
    logger.info("cached dataset written to %s: %s", output,
                ", ".join(f"{name} {len(ds)} rows" for name, ds in splits.items() if ds is not None))
    return output


def _encode(rows, template, args: ExportArguments, mode: str):
    """train: as swift sft encodes rows (preference rows: their chosen answer; sft drops what exceeds its own
    --max_length); rlhf / kto: as swift rlhf encodes them for DPO (its other pairwise methods rebuild their layout
    from these ids) and KTO, rows whose answer did not survive truncation dropped."""
    from swift.core import encode_rows

    if rows is None:
        return None
    if mode == "train":
        return encode_rows(rows, template, args.data, args.template, chosen_only=True)
    from swift.train.rlhf import layouts

    return encode_rows(rows, template, args.data, args.template,
                       encode=layouts.EXPORTED_ROWS[mode]).filter(layouts.has_answer)
