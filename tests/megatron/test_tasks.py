"""`megatron sft --task_type seq_cls|embedding|reranker|generative_reranker`: the same objective as
`swift sft --task_type` on the same rows and weights, the same losses under tensor parallelism, validation metrics,
and trained checkpoints (full and LoRA) that `swift infer` scores as they were trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.megatron.conftest import check, logged_losses, run_megatron
from tests.train.test_tasks import WORDS, _cos, _ranked_first, user, write_rows

pytest.importorskip("megatron.core")

BATCH = ("--train_type", "full", "--micro_batch_size", "8", "--global_batch_size", "8", "--max_length", "128",
         "--lr", "3e-3", "--lr_decay_style", "constant", "--log_interval", "1", "--seed", "7", "--bf16", "false")


def embedding_rows(path: Path, repeat: int = 1) -> Path:
    rows = [{"messages": user(f"Tell me about the {w}."), "positive_messages": [user(f"{w}: a short note")],
             "negative_messages": [user(f"{WORDS[(i + 3) % 8]}: a short note")]} for i, w in enumerate(WORDS)]
    return write_rows(path, rows * repeat)


def reranker_rows(path: Path, repeat: int = 1) -> Path:
    def doc(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    rows = [{"messages": user(f"Where is the {w}?"), "positive_messages": [doc(f"The {w} is in the garden.")],
             "negative_messages": [doc(f"Nobody knows about {WORDS[(i + k) % 8]}s.") for k in (1, 2, 5)[:1 + i % 3]]}
            for i, w in enumerate(WORDS)]  # 1 to 3 negatives: rows of one micro-batch differ in their sequences
    return write_rows(path, rows * repeat)


def _swift_sft_first_loss(model: Path, data: Path, out: Path, *flags: str) -> float:
    from swift.train import sft_main

    sft_main(["--model", str(model), "--dataset", str(data), "--output_dir", str(out), "--report_to", "none",
              "--bf16", "false", "--gradient_checkpointing", "false", "--logging_steps", "1", "--max_steps", "1",
              "--train_type", "full", "--per_device_train_batch_size", "8", "--max_length", "128",
              "--split_dataset_ratio", "0", *flags])
    (log,) = out.glob("**/logging.jsonl")
    return next(json.loads(line)["loss"] for line in log.read_text().splitlines() if "loss" in json.loads(line))


@pytest.mark.parametrize(("task", "loss", "rows"), [("embedding", "infonce", embedding_rows),
                                                    ("generative_reranker", "listwise_reranker", reranker_rows)])
def test_step_one_loss_is_swift_sfts_on_the_same_rows(tiny_llama_dir, tmp_path, task, loss, rows):
    from swift.megatron import sft_main

    data = rows(tmp_path / "rows.jsonl")
    flags = ("--task_type", task, "--loss_type", loss)
    sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), *BATCH, *flags, "--train_iters", "1",
              "--save", str(tmp_path / "mcore")])
    ours = logged_losses(tmp_path / "mcore")[1]
    reference = _swift_sft_first_loss(tiny_llama_dir, data, tmp_path / "hf", *flags)
    assert abs(ours - reference) < 1e-4, (ours, reference)


def test_embedding_learns_evaluates_and_serves_as_trained(tiny_llama_dir, tmp_path):
    from swift.infer import infer_main
    from swift.megatron import sft_main

    data = embedding_rows(tmp_path / "emb.jsonl", repeat=4)
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), *BATCH, "--task_type", "embedding",
                       "--train_iters", "50", "--save_interval", "50", "--save_safetensors", "true",
                       "--val_dataset", str(embedding_rows(tmp_path / "val.jsonl")), "--eval_interval", "25",
                       "--save", str(tmp_path / "run")])
    evals = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()
             if "eval_loss" in line]
    assert [e["step"] for e in evals] == [25, 50]
    assert evals[-1]["eval_mrr"] > evals[0]["eval_mrr"] or evals[0]["eval_mrr"] == 1.0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    out = tmp_path / "emb.out.jsonl"
    assert infer_main(["--model", str(result.run_dir / "checkpoint-50"), "--task_type", "embedding",
                       "--val_dataset", str(embedding_rows(tmp_path / "pairs.jsonl")), "--result_path", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    queries, docs = [r["embedding"] for r in scored], [r["positive_embeddings"][0] for r in scored]
    assert _ranked_first([[_cos(q, d) for d in docs] for q in queries]) >= 7


@pytest.mark.parametrize(("task", "rows"), [pytest.param("embedding", embedding_rows, marks=pytest.mark.slow),
                                            ("generative_reranker", reranker_rows)])
def test_tensor_parallel_gives_the_one_process_losses(tiny_untied_dir, tmp_path, task, rows):
    """TP=2 splits the vocabulary: SmolLM2's "yes" and "no" (ids 10407, 4607) both sit in rank 0's half, so rank 1
    contributes zeros to the generative reranker's scores and must still run the same collectives."""
    from swift.megatron import sft_main

    data = rows(tmp_path / "rows.jsonl", repeat=2)
    flags = ("--model", str(tiny_untied_dir), "--dataset", str(data), *BATCH, "--task_type", task,
             "--micro_batch_size", "4", "--train_iters", "3")
    sft_main([*flags, "--save", str(tmp_path / "one")])
    check(run_megatron("sft", *flags, "--tensor_model_parallel_size", "2", "--save", str(tmp_path / "tp2"), nproc=2))
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "tp2")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])


def seq_cls_rows(path: Path, repeat: int = 1) -> Path:
    return write_rows(path, [{"messages": user(f"The word is {w}."), "label": i % 4} for i, w in enumerate(WORDS)] * repeat)


def reranker_head_rows(path: Path, repeat: int = 1) -> Path:
    rows = json.loads("[" + ",".join(reranker_rows(path).read_text().splitlines()) + "]")
    return write_rows(path, rows * repeat)


# the two trainers' optimizers made the same: Adam(0.9, 0.999), no weight decay, clipping at 1, a constant rate
SAME_OPTIMIZER_MCORE = ("--adam_beta2", "0.999", "--weight_decay", "0", "--clip_grad", "1.0")
SAME_OPTIMIZER_HF = ("--learning_rate", "3e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
                     "--weight_decay", "0", "--max_grad_norm", "1.0", "--adam_beta2", "0.999")


@pytest.mark.parametrize(("task", "flags", "rows"), [
    ("seq_cls", ("--num_labels", "4"), seq_cls_rows),
    ("reranker", ("--loss_type", "listwise_reranker"), reranker_head_rows)])
def test_classification_heads_train_as_swift_sft_does(tiny_llama_dir, tmp_path, task, flags, rows):
    """Full training on one global batch gives swift sft's losses: step 1 (the head starts at zero in both, so it
    proves little) and step 2, after one update (to 1e-5); step 3 only loosely, since Adam's first step divides
    each gradient by its own size and so turns the two implementations' last-bit differences in tiny gradients
    into lr-sized ones."""
    import json as json_module

    from swift.megatron import sft_main
    from swift.train import sft_main as hf_sft_main

    data = rows(tmp_path / "rows.jsonl")
    sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), *BATCH, *SAME_OPTIMIZER_MCORE,
              "--task_type", task, *flags, "--train_iters", "3", "--save", str(tmp_path / "mcore")])
    ours = logged_losses(tmp_path / "mcore")
    hf_sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), "--output_dir", str(tmp_path / "hf"),
                 "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--logging_steps",
                 "1", "--max_steps", "3", "--train_type", "full", "--per_device_train_batch_size", "8",
                 "--max_length", "128", "--split_dataset_ratio", "0", *SAME_OPTIMIZER_HF, "--task_type", task, *flags])
    (log,) = (tmp_path / "hf").glob("**/logging.jsonl")
    reference = {row["step"]: row["loss"] for row in map(json_module.loads, log.read_text().splitlines())
                 if "loss" in row}
    assert sorted(ours) == [1, 2, 3]
    for step, tolerance in ((1, 1e-5), (2, 1e-5), (3, 0.05 * reference[3])):
        assert abs(ours[step] - reference[step]) < tolerance, (step, ours, reference)
    assert ours[3] < ours[1]


def test_seq_cls_learns_and_its_hf_copy_labels_as_trained(tiny_llama_dir, tmp_path):
    """The HF copy (--save_safetensors) is a ...ForSequenceClassification that swift infer labels with the task,
    labels and problem type the run's args.json records."""
    from swift.infer import infer_main
    from swift.megatron import sft_main

    data = seq_cls_rows(tmp_path / "cls.jsonl", repeat=4)
    result = sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), *BATCH, *SAME_OPTIMIZER_MCORE,
                       "--task_type", "seq_cls", "--num_labels", "4", "--train_iters", "60", "--save_interval", "60",
                       "--save_safetensors", "true", "--val_dataset", str(seq_cls_rows(tmp_path / "val.jsonl")),
                       "--eval_interval", "60", "--save", str(tmp_path / "run")])
    evals = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()
             if "eval_loss" in line]
    assert evals[-1]["eval_accuracy"] == 1.0
    hf = result.run_dir / "checkpoint-60"
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    recorded = json.loads((hf / "args.json").read_text())
    assert (recorded["task_type"], recorded["num_labels"], recorded["problem_type"]) == (
        "seq_cls", 4, "single_label_classification")
    out = tmp_path / "pred.jsonl"
    assert infer_main(["--model", str(hf), "--val_dataset", str(seq_cls_rows(tmp_path / "held.jsonl")),
                       "--result_path", str(out)]) == 0
    predicted = [json.loads(line)["response"] for line in out.read_text().splitlines()]
    assert predicted == [str(i % 4) for i in range(8)]


def test_seq_cls_lora_trains_its_head_identically_under_tp2_and_exports_it_both_ways(tiny_untied_dir, tmp_path):
    """LoRA trains the head beside the adapter (whole on both TP ranks); the merged HF copy and the PEFT adapter
    (head as modules_to_save) give the same logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from swift.megatron import export_main, sft_main

    data = seq_cls_rows(tmp_path / "cls.jsonl")
    flags = ("--model", str(tiny_untied_dir), "--dataset", str(data), *BATCH, "--train_type", "lora", "--lr",
             "1e-2", "--lora_dropout", "0", "--micro_batch_size", "4", "--task_type", "seq_cls", "--num_labels", "4", "--train_iters", "3",
             "--save_interval", "3")
    sft_main([*flags, "--save", str(tmp_path / "one")])
    check(run_megatron("sft", *flags, "--tensor_model_parallel_size", "2", "--save_safetensors", "true",
                       "--save", str(tmp_path / "tp2"), nproc=2))
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "tp2")
    assert sorted(two) == [1, 2, 3]
    assert one[3] != one[1]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    (run,) = (tmp_path / "tp2").iterdir()
    piece = torch.load(run / "iter_0000003" / "mp_rank_01" / "model_optim_rng.pt", weights_only=False)["model"]
    assert piece["output_layer.weight"].shape == (4, 64)
    assert piece["output_layer.weight"].abs().sum() > 0

    export_main(["--mcore_model", str(run), "--to_hf", "true", "--merge_lora", "false",
                 "--output_dir", str(tmp_path / "peft")])
    adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (adapter["task_type"], adapter["modules_to_save"]) == ("SEQ_CLS", ["score"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_untied_dir)
    ids = tokenizer(["The word is piano."], return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_untied_dir, num_labels=4, dtype=torch.float32)
    with torch.no_grad():
        via_peft = PeftModel.from_pretrained(base, tmp_path / "peft")(**ids).logits
        merged = AutoModelForSequenceClassification.from_pretrained(run / "checkpoint-3", dtype=torch.float32)
        assert torch.allclose(merged(**ids).logits, via_peft, atol=1e-4)
    assert via_peft.abs().max() > 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["--task_type", "seq_cls"], "--task_type seq_cls needs --num_labels"),
    (["--task_type", "embedding", "--num_labels", "2"], "--num_labels is for --task_type seq_cls"),
    (["--task_type", "embedding", "--loss_type", "pointwise_reranker"], "--task_type embedding takes infonce"),
    (["--loss_type", "infonce"], "the causal LM trains with cross_entropy"),
    (["--task_type", "embedding", "--packing", "true"], "drop --packing"),
])
def test_task_flag_problems_are_named(argv, needle, tmp_path):
    result = run_megatron("sft", "--model", str(tmp_path), "--dataset", str(tmp_path / "x.jsonl"), *argv)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr[-2000:]


def test_infonce_scores_every_data_parallel_ranks_rows_as_one_process_would(tiny_untied_dir, tmp_path):
    """DP=2 with 4 rows per rank gathers the other rank's embeddings (as ms-swift does): the losses of one process
    holding all 8 rows, with exact gradients (the backward sums every rank's share)."""
    from swift.megatron import sft_main

    data = embedding_rows(tmp_path / "rows.jsonl")
    flags = ("--model", str(tiny_untied_dir), "--dataset", str(data), *BATCH, "--task_type", "embedding",
             "--lr", "1e-4", "--train_iters", "3")
    sft_main([*flags, "--save", str(tmp_path / "one")])  # one micro-batch of all 8 rows
    check(run_megatron("sft", *flags, "--micro_batch_size", "4", "--save", str(tmp_path / "dp2"), nproc=2))
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "dp2")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-5, (step, one[step], two[step])
