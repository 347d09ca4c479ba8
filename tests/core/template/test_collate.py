"""data_collator: padded batches, padding-free rows with restarting positions, preference and KTO batches."""

from __future__ import annotations

import pytest
import torch

from swift.core.template import IGNORE_INDEX, TemplateError, get_template
from tests.core.template.conversations import CASES, assistant, user


@pytest.fixture(scope="module")
def template(tokenizer_of):
    return get_template(None, tokenizer_of("qwen2_5"))


def test_padded_batch(template):
    rows = [template.encode({"messages": CASES[name][0]}) for name in ("single", "multi", "generation")]
    batch = template.data_collator(rows)
    lengths = [len(row["input_ids"]) for row in rows]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, max(lengths))
    assert batch["input_ids"].dtype == torch.long
    for k, row in enumerate(rows):
        n = lengths[k]
        assert batch["input_ids"][k, :n].tolist() == row["input_ids"]
        assert batch["labels"][k, :n].tolist() == row["labels"]
        assert batch["attention_mask"][k].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert set(batch["input_ids"][k, n:].tolist()) <= {template.pad_id}
        assert set(batch["labels"][k, n:].tolist()) <= {IGNORE_INDEX}
    left = template.data_collator(rows, padding_side="left")
    assert left["input_ids"][0, -lengths[0]:].tolist() == rows[0]["input_ids"]
    assert left["attention_mask"][0, 0].item() == (0 if lengths[0] < max(lengths) else 1)


def test_padding_free_batch(template):
    rows = [template.encode({"messages": CASES[name][0]}) for name in ("single", "multi")]
    batch = template.data_collator(rows, padding_free=True)
    n0, n1 = (len(row["input_ids"]) for row in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, n0 + n1)
    assert "attention_mask" not in batch
    assert batch["input_ids"][0].tolist() == rows[0]["input_ids"] + rows[1]["input_ids"]
    assert batch["position_ids"][0].tolist() == list(range(n0)) + list(range(n1))
    labels = batch["labels"][0].tolist()
    assert labels[0] == labels[n0] == IGNORE_INDEX  # no token learns to predict the next sequence's start
    assert labels[1:n0] == rows[0]["labels"][1:]
    assert labels[n0 + 1:] == rows[1]["labels"][1:]


def test_preference_and_kto_batches(template):
    preference = [template.encode({"messages": [user(f"Say {w}."), assistant(w)], "rejected_response": "no"})
                  for w in ("yes", "certainly not")]
    batch = template.data_collator(preference)
    assert set(batch) == {f"{side}_{key}" for side in ("chosen", "rejected")
                          for key in ("input_ids", "labels", "attention_mask")}
    assert batch["chosen_input_ids"].shape[0] == batch["rejected_input_ids"].shape[0] == 2
    kto = [template.encode({"messages": [user("Hi"), assistant("Hello")], "label": label}) for label in (True, False)]
    assert template.data_collator(kto)["label"].tolist() == [True, False]
    with pytest.raises(TemplateError, match="empty batch"):
        template.data_collator([])
