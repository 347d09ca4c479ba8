"""--init_weights lora-ga: A starts on the top right singular vectors of the weights' gradient, the initial model is
unchanged, and a trained checkpoint's converted/default adapter on the *original* base is the trained model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from swift.core import get_model_tokenizer
from swift.core.errors import ConfigError
from tests.fixtures import DATA
from tests.tuners.test_prepare import tuner

TEXTS = ["The river runs past the old mill.", "Stones do not float, clouds do.", "A tiger sleeps under the tree.",
         "Candles light the quiet room at night."]


def _batches(tokenizer):
    def sample_batches(batch_size: int, max_length: int, count: int):
        for i in range(count):
            enc = tokenizer(TEXTS[i * batch_size:(i + 1) * batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    return sample_batches


def test_lora_ga_starts_on_the_gradients_top_singular_vectors_and_leaves_the_model_unchanged(tiny_llama_dir):
    from swift.tuners import prepare_model

    model, tokenizer = get_model_tokenizer(str(tiny_llama_dir))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    reference = copy.deepcopy(model)
    rank = 4
    prepared = prepare_model(model, tuner("--init_weights", "lora-ga", "--lora_rank", str(rank), "--lora_dropout", "0",
                                          "--lora_ga_batch_size", "2", "--lora_ga_iters", "2"),
                             sample_batches=_batches(tokenizer))
    probe = tokenizer(["An unrelated probe sentence."], return_tensors="pt")
    with torch.no_grad():
        gap = (prepared.model(**probe).logits - reference(**probe).logits).abs().max().item()
    assert gap < 1e-4  # W - s·B0·A0 + s·B0·A0

    # the averaged gradient of one weight, computed independently on the same two batches
    for batch in _batches(tokenizer)(2, 1024, 2):
        reference(**batch).loss.backward()
    gradient = reference.model.layers[0].self_attn.q_proj.weight.grad / 2
    _, _, vh = torch.linalg.svd(gradient.float())
    layer = prepared.model.base_model.model.model.layers[0].self_attn.q_proj
    a = layer.lora_A["default"].weight.detach()  # ArB2r: A = the gradient's first r right singular vectors
    overlap = torch.linalg.svdvals(torch.linalg.qr(a.T).Q.T @ vh[:rank].T)
    assert overlap.min() > 0.99, overlap
    assert layer.lora_B["default"].weight.abs().sum() > 0  # unlike the default init, B starts non-zero
    base_change = reference.model.layers[0].self_attn.q_proj.weight - layer.base_layer.weight
    expected = layer.scaling["default"] * layer.lora_B["default"].weight @ a
    assert torch.allclose(base_change.detach(), expected, atol=1e-5)
    assert [type(c).__name__ for c in prepared.callbacks] == ["ConvertedAdapter"]


def test_lora_ga_flags_are_checked(tiny_llama_dir):
    from swift.tuners import check_tuner_args, prepare_model

    assert any("--lora_ga_iters 0" in p for p in check_tuner_args(tuner("--init_weights", "lora-ga",
                                                                        "--lora_ga_iters", "0")))
    model, _ = get_model_tokenizer(str(tiny_llama_dir))
    with pytest.raises(ConfigError, match="estimates gradients on training rows"):
        prepare_model(model, tuner("--init_weights", "lora-ga"))
    with pytest.raises(ConfigError, match="EVA needs activation statistics"):
        prepare_model(model, tuner("--init_weights", "eva"))


def _loss(model, tokenizer, rows: list[dict]) -> float:
    from swift.core.template import get_template

    template = get_template(None, tokenizer)
    batch = template.data_collator([{k: v for k, v in template.encode(r).items() if k in ("input_ids", "labels")}
                                    for r in rows])
    with torch.no_grad():
        return model(**batch).loss.item()


def test_a_trained_checkpoints_converted_adapter_is_the_trained_model_on_the_original_base(tiny_llama_dir,
                                                                                            tmp_path):
    from peft import PeftModel

    from swift.core.arguments import parse_args
    from swift.infer import InferArguments
    from swift.infer.checkpoint import resolve_serve_spec
    from swift.train import export_main, sft_main

    data = DATA / "identity.jsonl"
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), "--val_dataset", str(data),
                       "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--bf16", "false",
                       "--init_weights", "lora-ga", "--lora_rank", "4", "--lora_ga_batch_size", "4",
                       "--learning_rate", "1e-3", "--max_steps", "4", "--save_steps", "4", "--eval_steps", "4",
                       "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32",
                       "--padding_free", "false", "--logging_steps", "1"])
    checkpoint = result.last_checkpoint
    converted = checkpoint / "converted" / "default"
    config = json.loads((converted / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 64, True)
    assert json.loads((checkpoint / "adapter_config.json").read_text())["init_lora_weights"] is True
    logged = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()]
    trained_loss = next(row["eval_loss"] for row in logged if "eval_loss" in row and row["step"] == 4)

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    base, tokenizer = get_model_tokenizer(str(tiny_llama_dir))
    on_original = PeftModel.from_pretrained(base, converted)
    assert abs(_loss(on_original, tokenizer, rows) - trained_loss) < 1e-4
    raw, _ = get_model_tokenizer(str(tiny_llama_dir))
    raw_loss = _loss(PeftModel.from_pretrained(raw, checkpoint), tokenizer, rows)
    assert abs(raw_loss - trained_loss) > 1e-3  # the rank-r adapter alone belongs to the residual base

    # swift export / infer take the converted adapter when given the checkpoint
    merged = tmp_path / "merged"
    export_main(["--adapters", str(checkpoint), "--merge_lora", "true", "--output_dir", str(merged)])
    merged_model, _ = get_model_tokenizer(str(merged))
    assert abs(_loss(merged_model, tokenizer, rows) - trained_loss) < 1e-4
    spec = resolve_serve_spec(parse_args(InferArguments, ["--adapters", str(checkpoint)]))
    assert Path(next(iter(spec.adapters.values()))) == converted


def test_resuming_repeats_the_estimate_and_the_losses(tiny_llama_dir, tmp_path):
    from swift.train import sft_main

    def losses(run_dir: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
        return {row["step"]: row["loss"] for row in rows if "loss" in row}

    common = ["--model", str(tiny_llama_dir), "--dataset", str(DATA / "identity.jsonl"), "--report_to", "none",
              "--bf16", "false", "--init_weights", "lora-ga", "--lora_rank", "4", "--learning_rate", "1e-3",
              "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
              "--padding_free", "false", "--lora_dropout", "0", "--split_dataset_ratio", "0"]
    whole = sft_main([*common, "--output_dir", str(tmp_path / "whole")])
    resumed = sft_main([*common, "--output_dir", str(tmp_path / "resumed"),
                        "--resume_from_checkpoint", str(whole.run_dir / "checkpoint-2")])
    first, second = losses(whole.run_dir), losses(resumed.run_dir)
    assert sorted(second) == [3, 4]
    for step in (3, 4):
        assert abs(first[step] - second[step]) < 1e-6, (step, first[step], second[step])
