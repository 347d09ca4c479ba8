"""Calibration and held-out text: seeded samples of `--dataset`, so the same seed gives the same samples."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from swift.core import ConfigError
from swift.train.arguments import ExportArguments

# Held out from every calibration set: what quant_report.json measures on when --dataset leaves no rows over.
BUILTIN_HELD_OUT = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "Write a short poem about rain."},
     {"role": "assistant", "content": "Soft rain on the roof,\nthe garden drinks in silence,\nclouds hum their grey song."}],
    [{"role": "user", "content": "Explain in two sentences why the sky is blue."},
     {"role": "assistant", "content": "Sunlight scatters off the molecules of the air, and blue light, with its short "
                                      "wavelength, scatters far more than red. So blue reaches our eyes from every "
                                      "direction of the sky."}],
    [{"role": "user", "content": "def add(a, b):"},
     {"role": "assistant", "content": "```python\ndef add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n"
                                      "    return a + b\n```"}],
]


@dataclass
class TextSets:
    calibration: list[str]  # rendered rows the quantizer sees
    held_out: list[str]  # rendered rows it never sees, for quant_report.json
    held_out_source: str = "built-in"


def render(row: dict, tokenizer: Any) -> str:
    """A dataset row as the model sees it: its chat template over the messages, or the raw text."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    text = row.get("text") or row.get("response") or ""
    return str(text)


def sample_texts(args: ExportArguments, tokenizer: Any, *, n_held_out: int = 8) -> TextSets:
    """`--quant_n_samples` rows sampled with `--data_seed` for calibration; the rows left over (up to `n_held_out`),
    else the built-in conversations, are held out."""
    builtin = [render({"messages": m}, tokenizer) for m in BUILTIN_HELD_OUT]
    if not args.data.dataset:
        return TextSets([], builtin, "built-in conversations")
    from swift.core import load_dataset

    train, _ = load_dataset(args.data.dataset, strict=args.data.strict, seed=args.data.data_seed,
                            model_name=args.data.model_name, model_author=args.data.model_author,
                            columns=args.data.columns)
    rows = [render(row, tokenizer) for row in train]
    rows = [r for r in rows if r.strip()]
    if not rows:
        raise ConfigError(f"--dataset {' '.join(args.data.dataset)}: no rows with text to calibrate on")
    order = list(range(len(rows)))
    random.Random(args.data.data_seed).shuffle(order)
    n = min(args.export.quant_n_samples, len(rows))
    calibration = [rows[i] for i in order[:n]]
    held_out, where = [rows[i] for i in order[n:n + n_held_out]], "--dataset rows not sampled for calibration"
    if args.data.val_dataset:
        val, _ = load_dataset(args.data.val_dataset, strict=args.data.strict, seed=args.data.data_seed,
                              columns=args.data.columns)
        held_out, where = [render(row, tokenizer) for row in val][:n_held_out], "--val_dataset"
    if not held_out:
        return TextSets(calibration, builtin, "built-in conversations (--dataset had no rows left over)")
    return TextSets(calibration, held_out, where)


def tokenize(texts: list[str], tokenizer: Any, max_length: int | None) -> list[Any]:
    """One `[1, T]` LongTensor per text, cut at `max_length` tokens."""
    import torch

    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_length:
            ids = ids[:max_length]
        if ids:
            out.append(torch.tensor([ids], dtype=torch.long))
    return out
