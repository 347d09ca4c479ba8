"""`swift eval`'s parent side: the EvalScope child gets the server's API key in its environment, never in a file."""

from __future__ import annotations

import json
import subprocess
import types
from pathlib import Path

import pytest

from swift.core.arguments import parse_args
from swift.infer.arguments import EvalArguments
from swift.infer.eval import run as eval_run
from swift.infer.eval.datasets import plan_benchmarks
from swift.infer.eval.endpoint import Endpoint
from tests.infer.conftest import live_server

pytest.importorskip("evalscope", reason='swift eval needs the eval extra: pip install "swift-infer[eval]"')

KEY = "sk-never-on-disk-5f0c1d"


def files_holding(root: Path, text: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes())


def test_the_key_reaches_the_evalscope_child_through_its_environment_only(tiny_engine, tmp_path, monkeypatch):
    data = tmp_path / "mcq"
    data.mkdir()
    (data / "quiz_val.jsonl").write_text(json.dumps({"id": 0, "question": "What is 3 + 4?", "A": "6", "B": "7",
                                                     "C": "8", "D": "9", "answer": "B"}) + "\n")
    out = tmp_path / "eval"
    args = parse_args(EvalArguments, [
        "--model", tiny_engine.model_name, "--eval_dataset", "general_mcq", "--eval_output_dir", str(out),
        "--dataset_args", json.dumps({"general_mcq": {"local_path": str(data), "subset_list": ["quiz"]}}),
        "--eval_generation_config", '{"max_tokens": 4}'], prog="swift eval")
    on_disk_at_spawn = []

    def call(command: list[str], **kwargs) -> int:  # the real child, looked at as it starts
        on_disk_at_spawn.extend(files_holding(out, KEY))
        return subprocess.call(command, **kwargs)

    monkeypatch.setattr(eval_run, "subprocess", types.SimpleNamespace(call=call))
    with live_server(tiny_engine, api_key=KEY) as url:  # a server that answers nothing without the key
        result = eval_run.evaluate(args, Endpoint(url, KEY, [tiny_engine.model_name]), [tiny_engine.model_name],
                                   plan_benchmarks(args.eval.eval_dataset, args.eval.dataset_args),
                                   eval_run.new_run_dir(out))
    assert [(row["subset"], row["num"]) for row in result.rows] == [("quiz", 1)]
    assert on_disk_at_spawn == []
    assert files_holding(out, KEY) == []
    (plan,) = out.glob("*/eval_plan.json")
    assert json.loads(plan.read_text())["api_key"] == "***"
