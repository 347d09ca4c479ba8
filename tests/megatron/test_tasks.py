"""`megatron sft --task_type embedding|generative_reranker`: the same objective as `swift sft --task_type` on the same
rows and weights, the same losses under tensor parallelism, validation metrics, and a trained checkpoint that
`swift infer` scores as it was trained."""

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


@pytest.mark.parametrize(("task", "rows"), [("embedding", embedding_rows), ("generative_reranker", reranker_rows)])
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


@pytest.mark.parametrize(("argv", "needle"), [
    (["--task_type", "seq_cls", "--num_labels", "2"], "has no mcore mapping yet"),
    (["--task_type", "embedding", "--loss_type", "pointwise_reranker"], "--task_type embedding takes infonce"),
    (["--loss_type", "infonce"], "the causal LM trains with cross_entropy"),
    (["--task_type", "embedding", "--packing", "true"], "drop --packing"),
])
def test_task_flag_problems_are_named(argv, needle, tmp_path):
    result = run_megatron("sft", "--model", str(tmp_path), "--dataset", str(tmp_path / "x.jsonl"), *argv)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr[-2000:]
