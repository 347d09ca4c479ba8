"""--eval_use_evalscope: EvalScope benchmarks scored on the model being trained at each evaluation, logged beside
the eval loss and usable for checkpoint selection (ms-swift's examples/eval/train_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swift.core import ConfigError
from swift.train import rlhf_main, sft_main
from tests.train.test_sft import flags

pytest.importorskip("evalscope", reason='--eval_use_evalscope needs the eval extra: pip install "swift-train[eval]"')

FACTS = [("What is the capital of France?", "Paris"), ("How many legs has a cat?", "4"), ("What is 3 + 4?", "7")]


@pytest.fixture
def benchmark(tmp_path) -> list[str]:
    """A local general_qa benchmark (EvalScope's format) and the flags that point --eval_dataset at it."""
    qa = tmp_path / "qa"
    qa.mkdir()
    (qa / "facts.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in FACTS) + "\n")
    return ["--eval_use_evalscope", "true", "--eval_dataset", "general_qa", "--eval_dataset_args",
            json.dumps({"general_qa": {"local_path": str(qa), "subset_list": ["facts"]}}), "--eval_limit", "2",
            "--eval_generation_config", '{"max_tokens": 8}']


@pytest.fixture
def rows_file(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant",
                                                                                        "content": a}]})
                              for q, a in FACTS * 4))
    return path


def test_benchmarks_are_scored_at_each_evaluation_and_select_the_best_checkpoint(tiny_llama_dir, rows_file, benchmark,
                                                                                 tmp_path):
    result = sft_main([*flags(tiny_llama_dir, rows_file, tmp_path / "out", "--max_steps", "2", "--eval_steps", "1",
                              "--save_steps", "1", "--load_best_model_at_end", "true", "--metric_for_best_model",
                              "eval_general_qa_rouge[statistic=f1,variant=l]", "--lora_rank", "4"), *benchmark])
    key = "eval_general_qa_rouge[statistic=f1,variant=l]"  # EvalScope's metric name, as swift eval reports it
    rows = [json.loads(line) for line in (result.run_dir / "logging.jsonl").read_text().splitlines()]
    scored = {r["step"]: r[key] for r in rows if key in r}
    assert sorted(scored) == [1, 2]
    assert all(0 <= score <= 1 for score in scored.values())
    assert not any("eval_loss" in r for r in rows)  # no validation split: the benchmarks only
    for step in (1, 2):  # EvalScope's own reports and predictions, per evaluation
        work = result.run_dir / "evalscope" / f"step-{step}"
        assert list(work.glob("**/reports/**/*.json")), step
        predictions = [json.loads(line) for p in work.glob("**/predictions/**/*.jsonl")
                       for line in p.read_text().splitlines()]
        assert len(predictions) == 2  # --eval_limit
    best_step = max(sorted(scored), key=scored.get)  # the first of equal scores, as transformers keeps it
    assert result.best_checkpoint == result.run_dir / f"checkpoint-{best_step}"
    assert rows[-1]["best_metric"] == pytest.approx(scored[best_step])


def test_evalscope_flags_are_checked_before_loading(tiny_llama_dir, rows_file, benchmark, tmp_path):
    with pytest.raises(ConfigError, match="--eval_dataset, --eval_limit: take effect only with --eval_use_evalscope"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--eval_dataset", "gsm8k", "--eval_limit", "3"))
    with pytest.raises(ConfigError, match="--eval_dataset: name at least one dataset"):
        sft_main(flags(tiny_llama_dir, rows_file, tmp_path, "--eval_use_evalscope", "true"))
    with pytest.raises(ConfigError, match="--eval_use_evalscope serves the model from the training process"):
        sft_main([*flags(tiny_llama_dir, rows_file, tmp_path), *benchmark, "--deepspeed", "zero2"])
    with pytest.raises(ConfigError, match="--eval_use_evalscope: swift sft's benchmark evaluation"):
        rlhf_main(["--rlhf_type", "dpo", *flags(tiny_llama_dir, rows_file, tmp_path), *benchmark])
