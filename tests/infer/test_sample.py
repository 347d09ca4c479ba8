"""`swift sample` on the PyTorch engine (the tiny llama): N answers per prompt, scored, the best kept, resumable.
On vLLM: tests/with_vllm/test_vllm_grpo.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swift.infer.cli import sample_main


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "math.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"}], "solution": f"\\boxed{{{i + 1}}}"}
            for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sample(model: Path, data: Path, out: Path, *extra: str) -> list[dict]:
    assert sample_main(["--model", str(model), "--dataset", str(data), "--num_return_sequences", "3",
                        "--max_new_tokens", "6", "--output_dir", str(out), "--output_file", "s.jsonl", "--seed", "3",
                        "--torch_dtype", "float32", *extra]) == 0
    return [json.loads(line) for line in (out / "s.jsonl").read_text().splitlines()]


def test_keeps_the_best_scored_answers_per_prompt_and_resumes(tiny_llama_dir, prompts, tmp_path):
    rows = sample(tiny_llama_dir, prompts, tmp_path, "--n_best_to_keep", "2", "--orm_model", "accuracy")
    assert [r["prompt_index"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert all(r["messages"][-1]["role"] == "assistant" and r["reward"] == 0.0 and r["group_size"] == 2
               for r in rows)
    assert len({(r["prompt_index"], r["sample_index"]) for r in rows}) == 10
    path = tmp_path / "s.jsonl"
    whole = path.read_bytes()
    # interrupted inside prompt 4's group: its complete first line and half of its second are dropped and redone
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:9]) + lines[9][:10])
    again = sample(tiny_llama_dir, prompts, tmp_path, "--n_best_to_keep", "2", "--orm_model", "accuracy")
    assert path.read_bytes() == whole  # seeded: prompt 4 sampled again gives the same lines
    assert len(again) == 10
    # done: a third run adds nothing; --override_exist_file starts afresh
    assert len(sample(tiny_llama_dir, prompts, tmp_path, "--n_best_to_keep", "2", "--orm_model", "accuracy")) == 10
    fresh = sample(tiny_llama_dir, prompts, tmp_path, "--override_exist_file", "true", "--n_best_to_keep", "1")
    assert [r["prompt_index"] for r in fresh] == [0, 1, 2, 3, 4]
    assert all(r["reward"] is None for r in fresh)  # no --orm_model: unscored, the first answer kept


def test_a_reward_model_ranks_the_answers_and_data_range_takes_one_part(tiny_llama_dir, prompts, tmp_path):
    rows = sample(tiny_llama_dir, prompts, tmp_path, "--orm_model", str(tiny_llama_dir), "--data_range", "1", "2")
    assert sorted({r["prompt_index"] for r in rows}) == [3, 4]  # the second of 2 parts of 5 rows
    for index in (3, 4):
        scores = [r["reward"] for r in rows if r["prompt_index"] == index]
        assert len(scores) == 3
        assert scores == sorted(scores, reverse=True)
        assert len(set(scores)) == 3  # a real score per answer, not a constant


def test_a_file_of_another_command_is_not_resumed(tiny_llama_dir, prompts, tmp_path):
    from swift.core import ConfigError

    (tmp_path / "s.jsonl").write_text('{"index": 0, "response": "x"}\n')
    with pytest.raises(ConfigError, match="line 1 is not a line of swift sample"):
        sample(tiny_llama_dir, prompts, tmp_path)
