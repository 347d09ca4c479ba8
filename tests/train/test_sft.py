"""swift sft end to end on a tiny random llama: output layout, PEFT checkpoints, exact resume, padding-free loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from swift.core.errors import ConfigError
from swift.train import export_main, sft_main
from tests.conftest import BIN


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    rows = []
    for i in range(48):
        answer = " ".join(["word"] * (3 + (i * 7) % 40)) + f" {i}."
        rows.append({"messages": [{"role": "user", "content": f"Question {i}: say some words."},
                                  {"role": "assistant", "content": answer}]})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def flags(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--per_device_train_batch_size",
            "4", "--logging_steps", "1", "--report_to", "none", "--learning_rate", "1e-3", "--bf16", "false",
            "--gradient_checkpointing", "false", *extra]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_sft_writes_the_documented_layout(tiny_llama_dir, chat_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = sft_main(flags(tiny_llama_dir, chat_file, tmp_path, "--max_steps", "4", "--save_steps", "2",
                            "--save_total_limit", "1", "--lora_rank", "4"))
    run = result.run_dir
    assert run.parent == tmp_path
    assert run.name.startswith("v0-")
    args = json.loads((run / "args.json").read_text())
    assert args["model"] == str(tiny_llama_dir)
    assert args["lora_rank"] == 4
    log = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all({"learning_rate", "grad_norm", "tokens_per_second", "peak_rss_gib"} <= r.keys() for r in steps[1:])
    assert (run / "images" / "train_loss.png").stat().st_size > 1000
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4"]  # save_total_limit 1
    assert not (run / ".checkpoint-staging").exists()
    checkpoint = result.last_checkpoint
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir)
    assert json.loads((checkpoint / "args.json").read_text())["model"] == str(tiny_llama_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), checkpoint)
    assert any("lora_A" in name for name, _ in model.named_parameters())

    again = sft_main(flags(tiny_llama_dir, chat_file, tmp_path, "--max_steps", "1"))
    assert again.run_dir.name.startswith("v1-")  # every run gets a new version directory


def test_resume_after_a_kill_continues_the_same_loss_curve(tiny_llama_dir, chat_file, tmp_path):
    common = ("--max_steps", "8", "--save_steps", "3", "--lora_rank", "4", "--add_version", "false")
    full = sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "full", *common))
    reference = losses(full.run_dir)

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([str(BIN / "swift"), "sft", *flags(tiny_llama_dir, chat_file, killed_dir, *common)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ | {"PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 240
    while not (killed_dir / "checkpoint-3").is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed_dir / "checkpoint-3" / "adapter_model.safetensors").is_file()

    resumed = sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                             str(killed_dir / "checkpoint-3")))
    after = losses(resumed.run_dir)
    assert sorted(after) == [4, 5, 6, 7, 8]
    for step, loss in after.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), step


def test_padding_free_and_packing_give_the_padded_loss(tiny_llama_dir, chat_file, tmp_path):
    common = ("--max_steps", "1", "--lora_rank", "4", "--dataset_shuffle", "false")
    padded = losses(sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "a", *common)).run_dir)[1]
    flat = losses(sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "b", *common, "--padding_free", "true")
                           ).run_dir)[1]
    assert flat == pytest.approx(padded, rel=1e-4)
    packed = sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "c", "--max_steps", "2", "--packing", "true",
                            "--max_length", "256", "--per_device_train_batch_size", "1"))
    assert packed.train_rows < 48  # rows were packed into fewer bins
    assert all(loss > 0 for loss in losses(packed.run_dir).values())


def test_bad_input_fails_before_the_model_loads(tiny_llama_dir, chat_file, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        sft_main(flags(tiny_llama_dir, tmp_path / "missing.jsonl", tmp_path))
    with pytest.raises(ConfigError, match="--max_length 16: every training row is longer"):
        sft_main(flags(tiny_llama_dir, chat_file, tmp_path, "--max_length", "16"))
    with pytest.raises(ConfigError) as e:
        sft_main(flags(tiny_llama_dir, chat_file, tmp_path, "--per_device_train_batch_size", "0", "--lora_rank", "0"))
    assert "--per_device_train_batch_size 0" in str(e.value)
    assert "--lora_rank 0" in str(e.value)


def test_merged_export_loads_in_plain_transformers_with_the_same_logits(tiny_llama_dir, chat_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = sft_main(flags(tiny_llama_dir, chat_file, tmp_path, "--max_steps", "3", "--lora_rank", "4"))
    merged = export_main(["--adapters", str(result.last_checkpoint), "--merge_lora", "true"])
    assert merged.name == f"{result.last_checkpoint.name}-merged"
    plain = AutoModelForCausalLM.from_pretrained(merged)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                           result.last_checkpoint).eval()
    ids = torch.tensor([[1, 20, 300, 4000, 5]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, peft_model(ids).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        export_main(["--adapters", str(result.last_checkpoint), "--merge_lora", "true"])
    alias = subprocess.run([str(BIN / "swift"), "merge-lora", "--adapters", str(result.last_checkpoint),
                            "--output_dir", str(tmp_path / "alias")], capture_output=True, text=True)
    assert alias.returncode == 0, alias.stderr
    assert (tmp_path / "alias" / "model.safetensors").is_file()


def test_pt_trains_on_raw_text_and_streams(tiny_llama_dir, tmp_path):
    from swift.train import pt_main

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"Line {i} of a plain corpus about rivers and stones." for i in range(40)))
    result = pt_main(["--model", str(tiny_llama_dir), "--dataset", str(text), "--output_dir", str(tmp_path / "pt"),
                      "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
                      "--bf16", "false", "--logging_steps", "1"])
    assert json.loads((result.run_dir / "args.json").read_text())["command"] == "pt"
    assert all(loss > 0 for loss in losses(result.run_dir).values())
    streamed = sft_main(flags(tiny_llama_dir, tmp_path / "corpus.txt", tmp_path / "stream", "--max_steps", "2",
                              "--streaming", "true", "--loss_scale", "all"))
    assert sorted(losses(streamed.run_dir)) == [1, 2]


def test_label_only_logits_give_the_model_loss(tiny_llama_dir):
    """SwiftTrainer computes logits only where labels are; the loss equals the model's own full-logits loss."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    from swift.train.trainer import SwiftTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    trainer = SwiftTrainer(model=model, args=TrainingArguments(output_dir="/tmp/unused", report_to=[], use_cpu=True))
    ids = torch.randint(0, 1000, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100  # padding of the shorter row
    with torch.no_grad():
        ours = trainer.compute_loss(model, {"input_ids": ids, "labels": labels})
        reference = model(input_ids=ids, labels=labels).loss
        assert ours == pytest.approx(reference.item(), rel=1e-5)
        items = int((labels[:, 1:] != -100).sum())
        scaled = trainer.compute_loss(model, {"input_ids": ids, "labels": labels}, num_items_in_batch=items * 2)
        assert scaled == pytest.approx(reference.item() / 2, rel=1e-5)


def test_preference_rows_train_on_the_chosen_answer(tiny_llama_dir, chat_file, tmp_path):
    """A DPO file given to `swift sft` trains on its chosen answers (as ms-swift does): the same first loss as the
    plain conversations, in both preference layouts."""
    rows = [json.loads(line) for line in chat_file.read_text().splitlines()]
    layouts = {
        "rejected_response": [{**r, "rejected_response": "no"} for r in rows],
        "chosen_rejected": [{"prompt": r["messages"][0]["content"], "chosen": r["messages"][1]["content"],
                             "rejected": "no"} for r in rows],
    }
    common = ("--max_steps", "1", "--lora_rank", "4", "--dataset_shuffle", "false")
    plain = losses(sft_main(flags(tiny_llama_dir, chat_file, tmp_path / "plain", *common)).run_dir)[1]
    for name, prefs in layouts.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in prefs))
        loss = losses(sft_main(flags(tiny_llama_dir, path, tmp_path / name, *common)).run_dir)[1]
        assert loss == pytest.approx(plain, rel=1e-5), name
