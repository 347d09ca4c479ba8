"""`swift eval` end to end on the tiny random llama: EvalScope against our own in-process server and against a
running `swift deploy` (--eval_url), local MCQ / QA files, a stand-in local copy of ARC, adapters side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.infer.conftest import free_port

pytest.importorskip("evalscope", reason='swift eval needs the eval extra: pip install "swift-infer[eval]"')

SWIFT = str(Path(sys.executable).parent / "swift")
QUESTIONS = [("What is the capital of France?", ["Berlin", "Paris", "Madrid", "Rome"], "B"),
             ("How many legs has a cat?", ["4", "2", "6", "8"], "A"),
             ("What colour is the sky on a clear day?", ["Green", "Red", "Blue", "Black"], "C"),
             ("What is 3 + 4?", ["6", "8", "9", "7"], "D")]


def swift(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([SWIFT, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> Path:
    """general_mcq, general_qa and a stand-in copy of ARC in Hugging Face dataset layout, all invented here."""
    root = tmp_path_factory.mktemp("eval-data")
    mcq = root / "mcq"
    mcq.mkdir()
    (mcq / "quiz_val.jsonl").write_text("\n".join(
        json.dumps({"id": i, "question": q, "A": c[0], "B": c[1], "C": c[2], "D": c[3], "answer": a})
        for i, (q, c, a) in enumerate(QUESTIONS)) + "\n")
    qa = root / "qa"
    qa.mkdir()
    (qa / "facts.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": c["ABCD".index(a)]})
                                              for q, c, a in QUESTIONS[:2]) + "\n")
    arc = root / "arc"
    (arc / "ARC-Challenge").mkdir(parents=True)
    (arc / "README.md").write_text("---\nconfigs:\n- config_name: ARC-Challenge\n  data_files:\n  - split: test\n"
                                   "    path: ARC-Challenge/test.jsonl\n---\n")
    (arc / "ARC-Challenge" / "test.jsonl").write_text("\n".join(json.dumps(
        {"id": f"q{i}", "question": q, "choices": {"text": c, "label": list("ABCD")}, "answerKey": a})
        for i, (q, c, a) in enumerate(QUESTIONS[:3])) + "\n")
    return root


def results(out: Path) -> list[dict]:
    (path,) = list(out.glob("*/results.json"))
    return json.loads(path.read_text())


def test_in_process_eval_scores_local_data_and_adapters_side_by_side(local_data, tiny_llama_dir, adapter_dirs,
                                                                      tmp_path):
    out = tmp_path / "eval"
    dataset_args = {"general_mcq": {"local_path": str(local_data / "mcq"), "subset_list": ["quiz"]},
                    "general_qa": {"local_path": str(local_data / "qa"), "subset_list": ["facts"]},
                    "ARC_c": {"local_path": str(local_data / "arc")}}
    done = swift("eval", "--model", str(tiny_llama_dir), "--adapters", f"a={adapter_dirs[0]}", "--eval_dataset", "general_mcq", "general_qa", "ARC_c",
                 "--dataset_args", json.dumps(dataset_args), "--eval_generation_config", '{"max_tokens": 8}',
                 "--eval_output_dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results(out)
    models = [str(tiny_llama_dir), "a"]
    mcq = [r for r in rows if r["dataset"] == "general_mcq"]
    assert sorted(r["model"] for r in mcq) == sorted(models)
    assert all(r["subset"] == "quiz" and r["num"] == 4 and 0 <= r["score"] <= 1 for r in mcq)
    arc = [r for r in rows if r["dataset"] == "ARC_c"]
    assert {(r["subset"], r["num"]) for r in arc} == {("ARC-Challenge", 3)}
    qa_metrics = {r["metric"] for r in rows if r["dataset"] == "general_qa"}
    assert any(m.lower().startswith("rouge") for m in qa_metrics)
    from swift.infer.eval.worker import has_punkt_tab

    if not has_punkt_tab():  # BLEU would be 0 for every row: it is left out, not reported
        assert not any("bleu" in m.lower() for m in qa_metrics)
    # One table, the models side by side; EvalScope's own reports beside results.json.
    header = next(line for line in done.stdout.splitlines() if line.startswith("dataset"))
    assert [c.strip() for c in header.split("|")] == ["dataset", "subset", "metric", *models, "n"]
    run_dir = next(out.iterdir())
    assert list(run_dir.glob("*/reports/**/*.json"))
    assert list(run_dir.glob("*/predictions/**/*.jsonl"))
    assert not list(run_dir.glob(".eval_plan.json"))  # the key-bearing plan is removed


def run_against_deploy(model_dir: Path, common: list[str], out: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    port = free_port()
    log = (tmp_path / "deploy.log").open("wb")
    deploy = subprocess.Popen([SWIFT, "deploy", "--model", str(model_dir), "--port", str(port), "--api_key",
                               "sk-test"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_models(port, "sk-test")
        return swift("eval", "--eval_url", f"http://127.0.0.1:{port}", "--api_key", "sk-test", *common,
                     "--eval_output_dir", str(out))
    finally:
        deploy.terminate()
        deploy.wait(timeout=30)


def mcq_args(local_data: Path) -> list[str]:
    dataset_args = json.dumps({"general_mcq": {"local_path": str(local_data / "mcq"), "subset_list": ["quiz"]}})
    return ["--eval_dataset", "general_mcq", "--dataset_args", dataset_args,
            "--eval_generation_config", '{"max_tokens": 8}']


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_eval_url_scores_a_running_deploy_named_by_its_v1_models(local_data, tiny_llama_dir, tmp_path):
    remote = run_against_deploy(tiny_llama_dir, mcq_args(local_data), tmp_path / "remote", tmp_path)
    assert remote.returncode == 0, remote.stderr[-3000:]
    (row,) = results(tmp_path / "remote")
    assert (row["dataset"], row["subset"], row["num"]) == ("general_mcq", "quiz", 4)
    assert 0 <= row["score"] <= 1
    (plan,) = list((tmp_path / "remote").glob("*/eval_plan.json"))
    assert [task["model"] for task in json.loads(plan.read_text())["tasks"]] == [str(tiny_llama_dir)]


@pytest.mark.slow
def test_eval_url_and_in_process_give_the_same_greedy_scores(local_data, tiny_llama_dir, tmp_path):
    own = swift("eval", "--model", str(tiny_llama_dir), *mcq_args(local_data), "--eval_output_dir",
                str(tmp_path / "own"))
    assert own.returncode == 0, own.stderr[-3000:]
    remote = run_against_deploy(tiny_llama_dir, mcq_args(local_data), tmp_path / "remote", tmp_path)
    assert remote.returncode == 0, remote.stderr[-3000:]
    (own_row,), (remote_row,) = results(tmp_path / "own"), results(tmp_path / "remote")
    assert own_row["num"] == remote_row["num"] == 4
    assert abs(own_row["score"] - remote_row["score"]) * 4 <= 1.01


def test_eval_url_with_no_server_fails_in_seconds_naming_the_url(local_data, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    done = swift("eval", "--eval_url", url, "--eval_dataset", "general_mcq", "--dataset_args",
                 json.dumps({"general_mcq": {"local_path": str(local_data / "mcq")}}),
                 "--eval_output_dir", str(tmp_path / "e"))
    assert time.monotonic() - start < 30
    assert done.returncode == 1
    assert url in done.stderr
    assert "Traceback" not in done.stderr


def test_builtin_benchmark_offline_fails_fast_with_the_way_out(tmp_path):
    env_offline = os.environ.get("HF_HUB_OFFLINE")
    assert env_offline == "1"  # the test session is offline (tests/conftest.py)
    start = time.monotonic()
    done = swift("eval", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--eval_dataset", "ARC_c",
                 "--eval_output_dir", str(tmp_path / "e"))
    assert time.monotonic() - start < 30
    assert done.returncode != 0
    assert "ARC_c" in done.stderr
    assert "local_path" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "e").exists()


def wait_models(port: int, key: str, timeout: float = 180) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if opener.open(request, timeout=5).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"swift deploy did not come up on port {port}")


@pytest.mark.slow
def test_ckpt_dir_takes_model_and_template_from_the_runs_args_json(local_data, sft_checkpoint, tmp_path):
    done = swift("eval", "--ckpt_dir", str(sft_checkpoint), "--eval_dataset", "general_mcq", "--dataset_args",
                 json.dumps({"general_mcq": {"local_path": str(local_data / "mcq"), "subset_list": ["quiz"]}}),
                 "--eval_generation_config", '{"max_tokens": 8}', "--eval_output_dir", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = results(tmp_path / "e")
    assert row["num"] == 4
    recorded = json.loads((sft_checkpoint / "args.json").read_text())["model"]
    (plan,) = list((tmp_path / "e").glob("*/eval_plan.json"))
    assert [task["model"] for task in json.loads(plan.read_text())["tasks"]] == [recorded]
