"""A weighting --loss_scale reaches the loss: SwiftTrainer weighs each token's cross-entropy by the batch's
`loss_scale` column and divides by the count of trained tokens (ms-swift's normalisation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def trainer(tiny_llama_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from swift.train.trainer import SwiftTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("t")), use_cpu=True, report_to=[])
    return SwiftTrainer(model=model, args=args)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2000, (2, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    scale = torch.where(labels == -100, 0.0, 1.0)
    scale[0, 6:8] = 2.5
    return ids, labels, scale


@pytest.mark.parametrize("logits_to_keep", [True, False])
def test_weighted_loss_is_the_weighted_sum_over_trained_tokens(trainer, logits_to_keep):
    ids, labels, scale = _batch()
    trainer.swift_args = {"use_logits_to_keep": logits_to_keep}
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, {"input_ids": ids, "labels": labels, "loss_scale": scale})
        logits = trainer.model(input_ids=ids).logits[:, :-1]
    ce = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="none")
    want = (ce * scale[:, 1:].flatten()).sum() / (labels[:, 1:] != -100).sum()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ones = trainer.compute_loss(trainer.model, {"input_ids": ids, "labels": labels,
                                                    "loss_scale": (labels != -100).float()})
        plain = trainer.compute_loss(trainer.model, {"input_ids": ids, "labels": labels})
    torch.testing.assert_close(ones, plain, rtol=1e-5, atol=1e-6)
    assert got > plain  # the 2.5 weights count
