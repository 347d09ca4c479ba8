"""`--predict_with_generate`: each validation row's last answer generated greedily from its prompt (the tokens
before that answer, images and all) and scored against the row's own answer with ms-swift's ROUGE-1/2/L and
BLEU-4 (swift.core.metrics), next to the usual eval loss."""

from __future__ import annotations

from typing import Any

IGNORE = -100


def last_answer_span(labels: list[int]) -> tuple[int, int] | None:
    """(start, end) of the last run of trained label positions, None for a row without one."""
    end = len(labels)
    while end and labels[end - 1] == IGNORE:
        end -= 1
    if not end:
        return None
    start = end
    while start and labels[start - 1] != IGNORE:
        start -= 1
    return start, end


def generated_metrics(trainer: Any, dataset: Any, prefix: str, max_new_tokens: int) -> dict[str, float]:
    """`{prefix}_rouge-1 ... _bleu-4` over `dataset`'s encoded rows, one row per generate call."""
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    from swift.core import score_rouge
    from swift.train.recipe import BOOKKEEPING

    synced = is_deepspeed_zero3_enabled()  # every rank joins each forward while any still generates
    template = trainer.data_collator.template
    tokenizer = template.tokenizer
    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    model.eval()
    pairs = []
    try:
        with torch.no_grad(), trainer.autocast_smart_context_manager():
            for row in dataset:
                span = last_answer_span(list(row["labels"]))
                if span is None or span[0] == 0:
                    continue
                start, end = span
                ids = list(row["input_ids"])
                media = {k: v for k, v in row.items() if k not in ("input_ids", "labels", "loss_scale", *BOOKKEEPING)}
                batch = template.data_collator([{**media, "input_ids": ids[:start], "labels": [IGNORE] * start}])
                inputs = {k: v.to(trainer.args.device) if hasattr(v, "to") else v for k, v in batch.items()
                          if k not in ("labels", "loss_scale", "position_ids")}
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=template.pad_id, synced_gpus=synced)
                answer = tokenizer.decode(out[0, start:], skip_special_tokens=True)
                reference = tokenizer.decode(ids[start:end], skip_special_tokens=True)
                pairs.append((answer.strip(), reference.strip()))
    finally:
        model.train(was_training)
    scores = score_rouge(pairs)
    return {f"{prefix}_{k}": v for k, v in scores.items() if k != "rows"} | {f"{prefix}_generated_rows": len(pairs)}
