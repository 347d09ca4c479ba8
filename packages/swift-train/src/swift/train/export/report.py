"""quant_report.json: what an export kept, measured against the unquantized model on held-out text."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT_FILE = "quant_report.json"
GREEDY_TOKENS = 16  # greedy continuation compared per held-out text: next-token agreement can hide broken answers
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


@dataclass
class Reference:
    """The unquantized model's logits on the held-out batches, taken before anything is quantized in place."""

    batches: list[Any]
    logits: list[Any]
    perplexity: float
    greedy: list[list[int]]  # the GREEDY_TOKENS tokens it generates after the first half of each batch


def _perplexity(logits: list[Any], batches: list[Any]) -> float:
    import torch

    total, count = 0.0, 0
    for lg, ids in zip(logits, batches, strict=True):
        if ids.shape[1] < 2:
            continue
        loss = torch.nn.functional.cross_entropy(lg[:-1].float(), ids[0, 1:], reduction="sum")
        total, count = total + loss.item(), count + ids.shape[1] - 1
    return math.exp(total / count) if count else float("nan")


def run_logits(model: Any, batches: list[Any]) -> list[Any]:
    """Last-layer logits `[T, vocab]` (float32, on CPU) for each `[1, T]` batch."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=ids.to(device), use_cache=False).logits[0].float().cpu() for ids in batches]


def greedy_continuations(model: Any, batches: list[Any]) -> list[list[int]]:
    """What the model writes, greedily, after the first half of each batch (up to GREEDY_TOKENS tokens or EOS)."""
    import torch

    device = next(model.parameters()).device
    config = model.generation_config
    eos = config.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    out = []
    with torch.no_grad():
        for ids in batches:
            prompt = ids[:, : max(1, ids.shape[1] // 2)].to(device)
            generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GREEDY_TOKENS,
                                       do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad)
            out.append(generated[0, prompt.shape[1]:].tolist())
    return out


def reference(model: Any, batches: list[Any]) -> Reference:
    logits = run_logits(model, batches)
    return Reference(batches, logits, _perplexity(logits, batches), greedy_continuations(model, batches))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def compare(ref: Reference, model: Any) -> dict:
    """Next-token agreement (top-1), max and mean absolute logit gap, perplexity after, and how far the greedy
    continuations of the held-out texts stay the same as the unquantized model's."""
    greedy = greedy_continuations(model, ref.batches)
    # an unchanged continuation counts whole, also when both stopped at EOS before GREEDY_TOKENS
    same = [GREEDY_TOKENS if a == b else _common_prefix(a, b) for a, b in zip(ref.greedy, greedy, strict=True)]
    logits = run_logits(model, ref.batches)
    agree = total = 0
    max_gap, gap_sum, gap_count = 0.0, 0.0, 0
    for a, b in zip(ref.logits, logits, strict=True):
        agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
        total += a.shape[0]
        diff = (a - b).abs()
        max_gap = max(max_gap, diff.max().item())
        gap_sum, gap_count = gap_sum + diff.sum().item(), gap_count + diff.numel()
    return {"next_token_agreement": round(agree / total, 4) if total else None,
            "max_logit_gap": round(max_gap, 4), "mean_logit_gap": round(gap_sum / max(gap_count, 1), 5),
            "perplexity_after": round(_perplexity(logits, ref.batches), 4),
            # texts whose whole greedy continuation is unchanged, and the mean tokens written before it changes
            "greedy_same": round(sum(a == b for a, b in zip(ref.greedy, greedy, strict=True)) / len(greedy), 4)
            if greedy else None,
            "greedy_tokens_before_divergence": round(sum(same) / len(same), 2) if same else None,
            "greedy_tokens": GREEDY_TOKENS}


def weights_size(path: Path) -> int:
    """Bytes of the weight files in a directory (or of one file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))


def model_bytes(model: Any) -> int:
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def texts_digest(texts: list[str]) -> str:
    """A fingerprint of the calibration samples: equal seeds give equal digests."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def write_report(output: Path, report: dict) -> Path:
    path = output / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path
