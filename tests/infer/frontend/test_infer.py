"""`swift infer`: answers lines from a pipe (a subprocess, as scripts use it), answers a dataset into a results file
and resumes it after an interruption."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from swift.core.errors import ConfigError
from swift.infer.cli import infer_main
from tests.conftest import BIN

QUESTIONS = ["Who are you?", "What is your name?"]


def test_pipe_mode_prints_one_answer_per_query(sft_checkpoint):
    from swift.core.arguments import parse_args
    from swift.infer.arguments import InferArguments
    from swift.infer.backends import build_engine
    from swift.infer.frontend.chat import answer_text
    from swift.infer.protocol import RequestConfig

    flags = ["--adapters", str(sft_checkpoint), "--temperature", "0", "--max_new_tokens", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(BIN / "swift"), "infer", *flags], input="\n".join(QUESTIONS) + "\n\n",
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    args = parse_args(InferArguments, flags, prog="swift infer")
    with build_engine(args) as engine:
        expected = [answer_text(engine.infer([{"messages": [{"role": "user", "content": q}]}], RequestConfig())[0])
                    for q in QUESTIONS]
    assert result.stdout == "".join(answer + "\n" for answer in expected)
    assert "serving" in result.stderr  # logs go to stderr, never into the answers


def test_a_dataset_is_answered_into_a_results_file_and_resumed(tiny_llama_dir, tmp_path, caplog):
    data = tmp_path / "val.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}."}]} for i in range(6)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "result.jsonl"
    flags = ["--model", str(tiny_llama_dir), "--val_dataset", str(data), "--result_path", str(out),
             "--temperature", "0", "--max_new_tokens", "4"]
    assert infer_main(flags) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(6))
    assert [line["labels"] for line in lines] == [f"Answer {i}." for i in range(6)]
    assert lines[2]["query"] == "Question 2?"
    assert all(line["usage"]["completion_tokens"] == 4 for line in lines)
    # an interrupted run: two complete lines and half of the third
    text = out.read_text().splitlines(keepends=True)
    out.write_text(text[0] + text[1] + text[2][:10])
    caplog.set_level("INFO", logger="swift.infer.frontend.batch")
    assert infer_main(flags) == 0
    assert "resuming at row 2" in caplog.text
    assert "wrote 4 answers" in caplog.text
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert resumed == lines


def test_flag_errors_stop_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="--adapters"):
        infer_main(["--adapters", str(tmp_path / "nothing"), "--val_dataset", str(tmp_path / "x.jsonl")])
