"""GRPO with vLLM rollouts: colocated (vLLM in the trainer's process, .venv-vllm) and against a `swift rollout`
server from a trainer without vLLM (the dev environment), and `swift sample` on vLLM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, SMOLLM2
from tests.infer.conftest import free_port, wait_for
from tests.with_vllm.conftest import EAGER, VLLM_SWIFT

FP32 = ["--vllm_engine_kwargs", '{"dtype": "float32"}']


@pytest.fixture(scope="module")
def math_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grpo") / "math.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {a} + {b}? Put the final answer in \\boxed{{}}."}],
             "solution": f"\\boxed{{{a + b}}}"} for a, b in [(3, 4), (12, 30), (100, 1), (7, 8), (2, 2), (9, 9)]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo(data: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return ["rlhf", "--rlhf_type", "grpo", "--model", SMOLLM2, "--dataset", str(data), "--train_type", "lora",
            "--max_steps", str(steps), "--save_steps", str(steps), "--per_device_train_batch_size", "4",
            "--num_generations", "4", "--max_completion_length", "24", "--reward_funcs", "accuracy", "format",
            "repetition", "--logging_steps", "1", "--report_to", "none", "--output_dir", str(out), "--seed", "7",
            *extra]


def logged_steps(out: Path) -> list[dict]:
    (log,) = out.glob("v*/logging.jsonl")
    return [row for row in map(json.loads, log.read_text().splitlines()) if "loss" in row]


def run(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


ROLLOUT_KEYS = ("completions/mean_length", "completions/min_length", "completions/max_length",
                "rewards/accuracy/mean", "rewards/format/mean", "rewards/repetition/mean", "reward")


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_colocated_vllm_rolls_out_what_the_pytorch_engine_does(vllm_env, math_data, tmp_path):
    """Greedy (top-k 1) in fp32 on both sides: the same completions, so the same rewards, lengths and losses."""
    greedy = ["--top_k", "1"]
    vllm_run = run([str(VLLM_SWIFT), *grpo(math_data, tmp_path / "vllm", *greedy, "--use_vllm", "true",
                                           "--vllm_mode", "colocate", *EAGER, *FP32)], vllm_env)
    assert vllm_run.returncode == 0, vllm_run.stderr[-3000:]
    assert "Traceback" not in vllm_run.stderr  # vLLM leaves its process groups before ours go
    pt_run = run([str(BIN / "swift"), *grpo(math_data, tmp_path / "pt", *greedy)], vllm_env)
    assert pt_run.returncode == 0, pt_run.stderr[-3000:]
    vllm_steps, pt_steps = logged_steps(tmp_path / "vllm"), logged_steps(tmp_path / "pt")
    assert len(vllm_steps) == len(pt_steps) == 2
    for v, p in zip(vllm_steps, pt_steps, strict=True):
        assert {k: v[k] for k in ROLLOUT_KEYS} == pytest.approx({k: p[k] for k in ROLLOUT_KEYS}, abs=1e-6)
        assert v["loss"] == pytest.approx(p["loss"], abs=1e-6)


@pytest.fixture(scope="module")
def rollout_server(vllm_env, smollm2_dir, tmp_path_factory):
    """`swift rollout` with LoRA on (it takes merged weights or the adapter), started the way clusters run it."""
    root = tmp_path_factory.mktemp("rollout")
    port = free_port()
    log_path = root / "rollout.log"
    log = log_path.open("w")
    process = subprocess.Popen([str(VLLM_SWIFT), "rollout", "--model", SMOLLM2, "--port", str(port),
                                "--vllm_enable_lora", "true", "--log_interval", "0", *EAGER],
                               stdout=log, stderr=subprocess.STDOUT, env=vllm_env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/rollout/info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, "swift rollout to answer", timeout=300)
    yield url, port, process
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)
    log.close()


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_grpo_against_swift_rollout_syncs_merged_weights_or_the_adapter(rollout_server, vllm_env, math_data,
                                                                       tmp_path):
    url, port, _ = rollout_server
    server = ["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1",
              "--vllm_server_port", str(port)]
    for name, extra in (("merged", []), ("adapter", ["--vllm_enable_lora", "true"])):
        before = httpx.get(f"{url}/rollout/info").json()["weight_version"]
        done = run([str(BIN / "swift"), *grpo(math_data, tmp_path / name, *server, *extra)], vllm_env)
        assert done.returncode == 0, done.stderr[-3000:]
        steps = logged_steps(tmp_path / name)
        assert len(steps) == 2
        assert all("rewards/accuracy/mean" in s and s["completions/mean_length"] > 0 for s in steps)
        assert httpx.get(f"{url}/rollout/info").json()["weight_version"] == before + 2  # one sync per step


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_a_rollout_server_that_dies_mid_run_is_named_in_the_error(rollout_server, vllm_env, math_data, tmp_path):
    _, port, process = rollout_server
    command = [str(BIN / "swift"), *grpo(math_data, tmp_path / "killed", "--use_vllm", "true", "--vllm_mode",
                                         "server", "--vllm_server_port", str(port), steps=200)]
    trainer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=vllm_env)
    wait_for(lambda: any(tmp_path.glob("killed/v*/logging.jsonl")) or trainer.poll() is not None,
             "the first GRPO step", timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    start = time.monotonic()
    _, stderr = trainer.communicate(timeout=120)
    assert trainer.returncode != 0
    assert time.monotonic() - start < 60  # an error, not a hang
    assert f"swift rollout server at http://127.0.0.1:{port}" in stderr
    assert "was it stopped?" in stderr


@pytest.mark.slow  # 15-100 s: out of the default suite's 20-minute budget
def test_swift_sample_on_vllm_writes_scored_answers(vllm_env, math_data, tmp_path):
    out = tmp_path / "sample"
    done = run([str(VLLM_SWIFT), "sample", "--model", SMOLLM2, "--dataset", f"{math_data}#3", "--sampler_engine",
                "vllm", "--num_return_sequences", "4", "--n_best_to_keep", "3", "--orm_model", "accuracy",
                "--max_new_tokens", "24", "--output_dir", str(out), "--output_file", "s.jsonl", "--seed", "1",
                *EAGER], vllm_env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 9  # 3 prompts x the 3 best of 4
    assert sorted({r["prompt_index"] for r in rows}) == [0, 1, 2]
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant"
        assert row["reward"] in (0.0, 1.0)
        assert row["solution"].startswith("\\boxed")
