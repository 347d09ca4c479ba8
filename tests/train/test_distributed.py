"""Multi-process training on CPU (gloo): NPROC_PER_NODE launches torchrun itself; one run dir for all ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from swift.core.errors import ConfigError
from swift.train import sft_main
from tests.conftest import BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a " * (3 + i % 9)}]}
            for i in range(32)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def launch(tiny_llama_dir: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"NPROC_PER_NODE": "2", "MASTER_PORT": str(free_port())}
    return subprocess.run([str(BIN / "swift"), "sft", "--model", str(tiny_llama_dir), "--dataset", str(data),
                           "--max_steps", "3", "--per_device_train_batch_size", "2", "--output_dir", str(out),
                           "--report_to", "none", "--bf16", "false", "--logging_steps", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def test_nproc_per_node_runs_ddp_with_one_run_directory(tiny_llama_dir, small_file, tmp_path):
    result = launch(tiny_llama_dir, small_file, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1  # rank 0 made it and told the others
    assert json.loads((runs[0] / "args.json").read_text())["world_size"] == 2
    assert (runs[0] / "checkpoint-3" / "adapter_model.safetensors").is_file()
    steps = [json.loads(line) for line in (runs[0] / "logging.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3]  # one log, written by rank 0 only


@pytest.mark.slow
def test_fsdp2_preset_trains_lora_on_two_processes(tiny_llama_dir, small_file, tmp_path):
    result = launch(tiny_llama_dir, small_file, tmp_path, "--fsdp", "fsdp2", "--gradient_checkpointing", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert next(tmp_path.glob("v0-*/checkpoint-3/adapter_model.safetensors")).is_file()


def test_strategy_flags_fail_early_and_clearly(tiny_llama_dir, small_file, tmp_path):
    with pytest.raises(ConfigError, match="--deepspeed 'zero9': use one of zero0"):
        sft_main(["--model", str(tiny_llama_dir), "--dataset", str(small_file), "--deepspeed", "zero9"])
    with pytest.raises(ConfigError, match="choose one"):
        sft_main(["--model", str(tiny_llama_dir), "--dataset", str(small_file), "--deepspeed", "zero2",
                  "--fsdp", "fsdp2"])
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"swift-train\[deepspeed\]"):
            sft_main(["--model", str(tiny_llama_dir), "--dataset", str(small_file), "--deepspeed", "zero2"])
