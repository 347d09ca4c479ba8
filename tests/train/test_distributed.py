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
    result = launch(tiny_llama_dir, small_file, tmp_path, "--ddp_find_unused_parameters", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1  # rank 0 made it and told the others
    assert json.loads((runs[0] / "args.json").read_text())["world_size"] == 2
    # the DDP wrapper's own setting (transformers would turn it on here: no gradient checkpointing)
    assert json.loads((runs[0] / "env.json").read_text())["ddp_find_unused_parameters"] is False
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


def test_presets_name_the_strategy_they_ask_for(tmp_path):
    from swift.train.distributed import requested_strategy

    assert requested_strategy(None, None, 1) == "single"
    assert requested_strategy(None, None, 2) == "ddp"
    assert [requested_strategy(f"zero{n}", None, 2) for n in range(4)] == [f"deepspeed_zero{n}" for n in range(4)]
    assert requested_strategy("zero3_offload", None, 2) == "deepspeed_zero3"
    assert (requested_strategy(None, "fsdp2", 2), requested_strategy(None, "fsdp1", 2)) == ("fsdp2", "fsdp1")
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 4}}))
    with pytest.raises(ConfigError, match=r"--deepspeed .*ds.json: zero_optimization.stage 4"):
        requested_strategy(str(bad), None, 2)


def test_bf16_under_deepspeed_is_autocast_with_fp32_weights(tmp_path):
    from swift.train.strategy import strategy_kwargs

    kwargs = strategy_kwargs("zero3", None, None, bf16=True)
    assert kwargs["bf16"] is False  # the Trainer must not also ask DeepSpeed for bf16 weights
    config = kwargs["deepspeed"]
    assert config["torch_autocast"]["enabled"]
    assert "bf16" not in config
    assert "fp16" not in config
    assert "bf16" not in strategy_kwargs("zero3", None, None, bf16=False)
    own = tmp_path / "ds.json"  # a config that sets its own precision is left as written
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}))
    assert strategy_kwargs(str(own), None, None, bf16=True) == {"deepspeed": json.loads(own.read_text())}


def test_srun_tasks_get_torch_ranks(monkeypatch):
    from swift.core.run.launch import _first_host, slurm_worker_env

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    got = slurm_worker_env()
    assert {k: got[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")} == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "NODE_RANK": "1"}
    assert got["MASTER_ADDR"] == "gpu07"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task per node: that task launches torchrun or trains alone
    assert slurm_worker_env() is None
    assert _first_host("node[1,3-5],login") == "node1"
    assert _first_host("a01,a02") == "a01"


def test_a_run_that_is_not_what_was_asked_for_stops(tiny_llama_dir, small_file, tmp_path):
    """A real Trainer in one process, told that DDP was asked for: the check stops it before the first step and
    env.json says what it found."""
    from transformers import TrainingArguments

    from swift.core import get_model_tokenizer
    from swift.core.template import get_template
    from swift.train.distributed import StrategyCheck, StrategyFallbackError
    from swift.train.trainer import SwiftTrainer

    model, tokenizer = get_model_tokenizer(str(tiny_llama_dir))
    template = get_template(None, tokenizer)
    rows = [template.encode({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})]
    trainer = SwiftTrainer(model=model, args=TrainingArguments(str(tmp_path), max_steps=1, use_cpu=True,
                                                               report_to=[], remove_unused_columns=False),
                           train_dataset=rows, data_collator=lambda batch: template.data_collator(
                               [{k: r[k] for k in ("input_ids", "labels")} for r in batch]))
    trainer.add_callback(StrategyCheck(trainer, tmp_path, "ddp"))
    with pytest.raises(StrategyFallbackError, match="asked for ddp but the Trainer wrapped the model as single"):
        trainer.train()
    info = json.loads((tmp_path / "env.json").read_text())
    assert (info["strategy"], info["requested_strategy"], info["world_size"]) == ("single", "ddp", 1)
    assert trainer.state.global_step == 0


def test_ddp_infonce_scores_every_ranks_rows_as_one_process_would(tiny_llama_dir, tmp_path):
    """2 processes x 4 rows give the losses of one process with all 8 (in-batch negatives gathered, exact
    gradients): ms-swift's embedding training on several GPUs."""
    from tests.train.test_tasks import WORDS, user, write_rows

    rows = [{"messages": user(f"Tell me about the {w}."), "positive_messages": [user(f"{w}: a short note")],
             "negative_messages": [user(f"{WORDS[(i + 3) % 8]}: a short note")]} for i, w in enumerate(WORDS)]
    data = write_rows(tmp_path / "emb.jsonl", rows)
    common = ("--task_type", "embedding", "--train_type", "full", "--learning_rate", "1e-4", "--max_steps", "3",
              "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--split_dataset_ratio", "0",
              "--gradient_checkpointing", "false", "--save_steps", "100")
    sft_main(["--model", str(tiny_llama_dir), "--dataset", str(data), "--output_dir", str(tmp_path / "one"),
              "--report_to", "none", "--bf16", "false", "--logging_steps", "1", "--per_device_train_batch_size", "8",
              *common])
    result = launch(tiny_llama_dir, data, tmp_path / "two", "--per_device_train_batch_size", "4", *common)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses_of(out: Path) -> dict[int, float]:
        (log,) = out.glob("*/logging.jsonl")
        return {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r}

    one, two = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
